"""Private copies of the config, one per generation.

Workers load the exact bytes the master validated: a reload copies the storage's
documents (the config file, the ``*.toml`` files of a config directory, or the etcd
keys) into a private directory, validates that copy and starts the generation's workers
on it. An edit made later — even an invalid one — cannot reach a worker that is
respawned after a crash, and workers never talk to etcd. Problem messages are mapped
back to the user's paths (or etcd URLs).

The directory (``$TMPDIR/pingap-config-*``, mode 0700) goes when the master exits. A
master that could not clean up (SIGKILL, the OOM killer) would leave its copies — and
any secrets in them — behind, so each master holds a lock on a file in its directory for
its whole life, and a starting master removes every such directory whose lock is free:
its master is gone. The lock is released by the kernel whatever ends a process, and it
does not depend on process ids (which other PID namespaces sharing ``/tmp`` reuse).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile

from master.storage import ConfigStorage, StorageError
from master.storage.documents import Document, Layout
from pingap.errors import ConfigError, Problem


class ConfigSnapshots:
    def __init__(self, storage: ConfigStorage, extra: list[Document] | None = None,
                 control_panel: bool = False) -> None:
        self.storage = storage
        self.control_panel = control_panel  # --cp: serve the admin only, no proxy servers
        self.extra = list(extra or ())  # config not in the storage (--admin's server)
        sweep_abandoned(tempfile.gettempdir())
        self.root = tempfile.mkdtemp(prefix=PREFIX)
        # held until this process ends (never inherited: Python's fds are close-on-exec);
        # locked before it takes its name, so a master sweeping at the same moment never
        # finds it free
        unnamed = os.path.join(self.root, LOCK_NAME + ".new")
        self._lock = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(unnamed, os.path.join(self.root, LOCK_NAME))

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
        os.close(self._lock)


PREFIX = "pingap-config-"
LOCK_NAME = ".master.lock"


def sweep_abandoned(tmpdir: str) -> list[str]:
    """Remove the ``pingap-config-*`` directories in ``tmpdir`` (ours, by owner) whose
    master is gone: their lock file can be locked. Returns the paths removed."""
    removed: list[str] = []
    try:
        names = os.listdir(tmpdir)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(PREFIX):
            continue
        path = os.path.join(tmpdir, name)
        if os.path.islink(path):
            continue
        try:
            fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock file: not a directory of this kind (or not ours to judge)
        try:
            if os.fstat(fd).st_uid != os.getuid():
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its master is running
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def _without_servers(document: Document) -> Document:
    """The document minus its ``[servers.*]`` tables (the rest is kept for editing)."""
    import tomlkit

    doc = tomlkit.parse(document.data.decode("utf-8-sig"))
    doc.pop("servers", None)
    return Document(document.key, tomlkit.dumps(doc).encode(), document.revision)
