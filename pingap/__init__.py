"""pingap for Python: the pure library (config, routing, upstream selection, session logic).

Nothing in this package does I/O, spawns processes or imports gevent; ``master`` and
``workers`` drive it.
"""

__version__ = "0.1.0"
