"""Private copies of the config, one per generation.

Workers load the exact bytes the master validated: a reload copies the config file (or
the ``*.toml`` files of a config directory) into a private directory, validates that copy
and starts the generation's workers on it. An edit made later — even an invalid one —
cannot reach a worker that is respawned after a crash. Problem messages are mapped back
to the user's paths.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from pingap.errors import ConfigError, Problem


class ConfigSnapshots:
    def __init__(self, source: str) -> None:
        self.source, sep, self.query = source.partition("?")
        self.query = sep + self.query
        self.root = tempfile.mkdtemp(prefix="pingap-config-")

    def take(self, generation: int) -> str:
        """Copy the config as it is now; returns the path workers load."""
        dest = os.path.join(self.root, f"gen-{generation}")
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        if os.path.isdir(self.source):
            for folder, dirs, names in os.walk(self.source):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                rel = os.path.relpath(folder, self.source)
                for name in sorted(names):
                    if name.endswith(".toml") and not name.startswith("."):
                        target_dir = os.path.normpath(os.path.join(dest, rel))
                        os.makedirs(target_dir, exist_ok=True)
                        shutil.copyfile(os.path.join(folder, name),
                                        os.path.join(target_dir, name))
            return dest + self.query
        target = os.path.join(dest, os.path.basename(self.source))
        shutil.copyfile(self.source, target)
        return target

    def user_paths(self, error: ConfigError, generation: int) -> ConfigError:
        """The same problems, naming the user's files instead of the copy."""
        copy = os.path.join(self.root, f"gen-{generation}")
        if not os.path.isdir(self.source):
            copy = os.path.join(copy, os.path.basename(self.source))
        problems = [Problem(p.file.replace(copy, self.source, 1), p.key,
                            p.message.replace(copy, self.source)) for p in error.problems]
        return ConfigError(problems)

    def drop(self, keep: set[int]) -> None:
        """Remove the copies of generations no worker uses any more."""
        for name in os.listdir(self.root):
            if name.startswith("gen-") and int(name[4:]) not in keep:
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
