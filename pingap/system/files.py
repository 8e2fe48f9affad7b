"""Atomic file replacement: a reader never sees a partial pid file, certificate or key."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path: str, data: str | bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` in one rename (mode 0600): readers never see a
    partial file. ``durable`` also syncs the data before the rename (keys, certificates)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pingap-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
