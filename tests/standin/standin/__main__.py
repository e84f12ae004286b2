"""`python3 -m standin zfs|zpool ARGS...` (with tests/standin on sys.path)."""

import sys

from .cli import main

if __name__ == "__main__":
    try:
        code = main()
    except BrokenPipeError:
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
