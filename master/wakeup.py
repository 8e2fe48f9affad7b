"""A wake-up pipe: a thread of the master writes a byte, the master's select loop wakes.

The config watchers (watchdog's observer, the storage poller) run in threads; the loop
selects on ``fd`` and calls ``drain()`` to consume every pending wake-up at once.
"""

from __future__ import annotations

import os


class WakePipe:
    """``fd`` becomes readable after ``wake()``; ``drain()`` says whether it had been."""

    def __init__(self) -> None:
        self.fd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def wake(self) -> None:
        try:
            os.write(self._wfd, b"w")
        except OSError:  # full: a wake-up is pending anyway
            pass

    def drain(self) -> bool:
        """Consume pending wake-ups; True if there were any."""
        seen = False
        try:
            while os.read(self.fd, 4096):
                seen = True
        except BlockingIOError:
            pass
        return seen
