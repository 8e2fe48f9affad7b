"""The application log of the master and the workers: one format, one level rule, reopen.

The level comes from ``PINGAP_LOG_LEVEL``, else ``basic.log_level`` (pingap's tracing
directives: the first plain level in it, e.g. ``"info"`` or ``"warn,pingap=debug"`` ->
WARNING), else INFO. ``reopen`` (USR1) closes and reopens file handlers for logrotate.
"""

from __future__ import annotations

import logging
import os
import sys

_LEVELS = {"trace": "DEBUG", "debug": "DEBUG", "info": "INFO", "warn": "WARNING",
           "warning": "WARNING", "error": "ERROR"}


def level_of(directive: str | None) -> str:
    env = os.environ.get("PINGAP_LOG_LEVEL")
    if env:
        return env.upper()
    for part in (directive or "").split(","):
        word = part.strip().lower()
        if word in _LEVELS:
            return _LEVELS[word]
    return "INFO"


def setup(path: str | None, directive: str | None = None) -> None:
    handler: logging.Handler = (logging.FileHandler(path) if path
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_of(directive))


def reopen() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.close()
            handler.stream = handler._open()
