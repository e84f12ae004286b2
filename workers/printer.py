"""How `zrepq-local` shows the engine's events on a terminal, as zrep would."""

from __future__ import annotations

import time
from typing import TextIO

from workers.engine.events import Event, Message, StreamFinished, StreamProgress, StreamStarted


class Printer:
    """Shows engine events: zrep's lines on stdout, zrepq's own on stderr, progress on a
    terminal.

    `quiet` (--json) keeps stdout for the JSON record: zrep's lines are not printed.
    `verbose` (a command's -v) adds zrepq's details, such as the stream's size estimate, on
    stderr, where zrep's -v (`zfs send -v`) puts its own.
    """

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool, verbose: bool = False) -> None:
        self.out, self.err, self.quiet, self.verbose = out, err, quiet, verbose
        self._last = 0.0
        self._estimate_shown = False

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            if event.level == "info":
                if not self.quiet:
                    print(event.text, file=self.out, flush=True)
            elif event.level != "detail" or self.verbose:
                print(event.text, file=self.err, flush=True)
        elif isinstance(event, StreamStarted):
            self._estimate_shown = False
            if self.verbose and event.total:
                self._estimate_shown = True
                print(f"estimated size: {event.total} bytes", file=self.err)
        elif isinstance(event, StreamProgress):
            # The estimate comes from the send itself, with the first progress event.
            if not self._estimate_shown and event.total and self.verbose:
                self._estimate_shown = True
                print(f"estimated size: {event.total} bytes", file=self.err)
            if not self.err.isatty():
                return
            now = time.monotonic()
            if now - self._last >= 0.5:
                self._last = now
                pct = f"{100 * event.bytes_sent / event.total:5.1f}%" if event.total else ""
                print(
                    f"\r{event.snapshot}: {event.bytes_sent} bytes {pct} "
                    f"{event.rate / 1e6:.1f} MB/s",
                    end="",
                    file=self.err,
                    flush=True,
                )
        elif isinstance(event, StreamFinished) and self.err.isatty():
            print(file=self.err)
