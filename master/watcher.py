"""Config watching for ``--autoreload``/``-a``: watchdog events wake the master loop.

watchdog runs its observer in a thread; the handler only writes a byte to a pipe that
the master's loop selects on. Debouncing (a burst of saves becomes one reload) happens in
the loop, which reloads once no event arrived for ``DEBOUNCE`` seconds.
"""

from __future__ import annotations

import os

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from master.wakeup import WakePipe

DEBOUNCE = 0.5


class _Wake(FileSystemEventHandler):
    def __init__(self, pipe: WakePipe, target: str) -> None:
        self.pipe = pipe
        self.target = os.path.abspath(target)
        self.is_dir = os.path.isdir(self.target)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        relevant = any(
            os.path.abspath(p) == self.target if not self.is_dir
            else os.path.abspath(p).startswith(self.target + os.sep) and p.endswith(".toml")
            for p in paths)
        if relevant:
            self.pipe.wake()


class ConfigWatcher(WakePipe):
    """Watches a config file or directory; ``fd`` becomes readable on changes."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = os.path.abspath(path)
        self._observer = Observer()
        watch_dir = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
        self._observer.schedule(_Wake(self, self.path), watch_dir,
                                recursive=os.path.isdir(self.path))
        self._observer.daemon = True

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
