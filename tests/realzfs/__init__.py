"""Real OpenZFS in QEMU guests: image builder, guest harness, pytest backend (docs/realzfs.md)."""
