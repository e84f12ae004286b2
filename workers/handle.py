"""What `Locks.hold` yields (`ports.LockHandle`): the holder's token, the names it holds, and
the `lost` event the holder watches. A lease in Redis can be lost (`workers.lease`); a flock
cannot while its process lives (`workers.filelock`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from workers.engine.errors import LockLost


class Handle:
    # Do the other zrepq processes of this host see this lock? (`LeaseAndFile`; when not,
    # the engine sets zrep's marks on the dataset for them: `steps._marks`.)
    host_excluded = True

    def __init__(
        self, token: str, names: Sequence[str], lost: threading.Event | None = None
    ) -> None:
        self._token = token
        self._lost = lost if lost is not None else threading.Event()
        self.names = tuple(names)

    @property
    def lost(self) -> threading.Event:
        return self._lost

    @property
    def token(self) -> str:
        return self._token

    def check(self) -> None:
        """Raise `LockLost` if the lease was lost."""
        if self._lost.is_set():
            raise LockLost(f"lost the lease on {', '.join(self.names)}")
