"""Private copies of the config, one per generation.

Workers load the exact bytes the master validated: a reload copies the storage's
documents (the config file, the ``*.toml`` files of a config directory, or the etcd
keys) into a private directory, validates that copy and starts the generation's workers
on it. An edit made later — even an invalid one — cannot reach a worker that is
respawned after a crash, and workers never talk to etcd. Problem messages are mapped
back to the user's paths (or etcd URLs).

The directory (``$TMPDIR/pingap-config-*``, mode 0700) goes when the master exits. A
master that could not clean up (SIGKILL, the OOM killer) would leave its copies — and
any secrets in them — behind, so each master holds an ``flock`` on a file in its
directory for its whole life, and a starting master removes the directories of its own
user in its ``$TMPDIR`` whose lock is free: their master is gone. The kernel releases
the lock however a process ends, and it does not depend on process ids (which other PID
namespaces sharing ``/tmp`` reuse). ``flock`` is a lock of one host: a ``$TMPDIR`` shared
between hosts (NFS) is not supported. Directories without the lock file (a master killed
in the instant between creating its directory and its lock, or an older version's) are
left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile

from master.storage import ConfigStorage, StorageError
from master.storage.documents import Document, Layout
from pingap.errors import ConfigError, Problem

log = logging.getLogger("pingap.master")


class ConfigSnapshots:
    def __init__(self, storage: ConfigStorage, extra: list[Document] | None = None,
                 control_panel: bool = False) -> None:
        self.storage = storage
        self.control_panel = control_panel  # --cp: serve the admin only, no proxy servers
        self.extra = list(extra or ())  # config not in the storage (--admin's server)
        sweep_abandoned(tempfile.gettempdir())
        self.root = tempfile.mkdtemp(prefix=PREFIX)
        self._lock = -1
        try:
            # held until this process ends (never inherited: Python's fds are
            # close-on-exec); locked before it takes its name, so a master sweeping at
            # the same moment never finds it free
            unnamed = os.path.join(self.root, LOCK_NAME + ".new")
            self._lock = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(unnamed, os.path.join(self.root, LOCK_NAME))
        except OSError:
            self.remove()
            raise

    @property
    def _single(self) -> bool:
        return self.storage.layout is Layout.SINGLE

    def take(self, generation: int) -> str:
        """Copy the config as it is now; returns the path workers load.

        Raises ``StorageError`` when the storage cannot be read."""
        documents = self.storage.documents()
        if self._single and not documents:
            raise StorageError(f"{self.storage.location('')}: no such file")
        dest = os.path.join(self.root, f"gen-{generation}")
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        if self.control_panel:
            documents = [_without_servers(d) for d in documents]
        for document in [*documents, *self.extra]:
            target = os.path.normpath(os.path.join(dest, document.key))
            if not target.startswith(dest + os.sep):
                continue  # a key cannot climb out of the copy
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as out:
                out.write(document.data)
        if self._single and not self.extra:
            return os.path.join(dest, self.storage.single_key)
        return dest

    def user_paths(self, error: ConfigError, generation: int) -> ConfigError:
        """The same problems, naming the user's files instead of the copy."""
        copy = os.path.join(self.root, f"gen-{generation}")
        source = self.storage.location("").rstrip("/")
        if self._single:
            copy = os.path.join(copy, self.storage.single_key)
            source = self.storage.location(self.storage.single_key)
        for document in self.extra:
            error = ConfigError([Problem(p.file.replace(
                os.path.join(self.root, f"gen-{generation}", document.key),
                f"--admin ({document.key})"), p.key, p.message) for p in error.problems])
        problems = [Problem(p.file.replace(copy, source, 1), p.key,
                            p.message.replace(copy, source)) for p in error.problems]
        return ConfigError(problems)

    def write_certificate_facts(self, generation: int, text: str) -> str:
        """Store what the master found parsing the certificates of ``generation``
        (``pingap.tls.dump_facts``) beside its copy; returns the path its workers read."""
        path = os.path.join(self.root, f"certificates-{generation}.json")
        with open(path, "w", encoding="utf-8") as out:
            out.write(text)
        return path

    def drop(self, keep: set[int]) -> None:
        """Remove the copies of generations no worker uses any more."""
        for name in os.listdir(self.root):
            if name.startswith("gen-") and int(name[4:]) not in keep:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
            elif name.startswith("certificates-") and \
                    int(name[len("certificates-"):-len(".json")]) not in keep:
                os.unlink(os.path.join(self.root, name))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


PREFIX = "pingap-config-"
LOCK_NAME = ".master.lock"


def sweep_abandoned(tmpdir: str) -> list[str]:
    """Remove the ``pingap-config-*`` directories in ``tmpdir`` whose master is gone:
    real directories (no symlinks) of this user, mode 0700, holding a lock file of this
    user that can be locked. Returns the paths removed."""
    removed: list[str] = []
    try:
        names = os.listdir(tmpdir)
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        if not name.startswith(PREFIX):
            continue
        path = os.path.join(tmpdir, name)
        try:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue  # a symlink, not a directory, or not ours to open
        try:
            held = os.fstat(dir_fd)
            if held.st_uid != uid or stat.S_IMODE(held.st_mode) != 0o700:
                continue
            try:
                fd = os.open(LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
            except OSError:
                continue  # no lock file: not a directory of this kind to judge
            try:
                lock = os.fstat(fd)
                if not stat.S_ISREG(lock.st_mode) or lock.st_uid != uid:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its master is running
                now = os.lstat(path)
                if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                    continue  # replaced since it was checked
                shutil.rmtree(path, ignore_errors=True)
                if not os.path.lexists(path):
                    log.info("removed %s: config copies of a master that is gone", path)
                    removed.append(path)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)
    return removed


def _without_servers(document: Document) -> Document:
    """The document minus its ``[servers.*]`` tables (the rest is kept for editing)."""
    import tomlkit

    doc = tomlkit.parse(document.data.decode("utf-8-sig"))
    doc.pop("servers", None)
    return Document(document.key, tomlkit.dumps(doc).encode(), document.revision)
