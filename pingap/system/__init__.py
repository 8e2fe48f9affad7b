"""Operating-system plumbing that both processes need: the master and every worker.

Application logging (``logs``), the shared-memory regions and their locks (``shm``),
atomic file replacement (``files``) and the worker's command line and exit codes
(``workercmd``). It lives under ``pingap/`` because it is the one floor below both
process packages (``workers/`` must never import ``master/``). Unlike the rest of
``pingap/`` these modules touch the OS (files, memfd, mmap, fcntl locks), but they stay
free of gevent, signals and forking, and hold no sockets: blocking-style calls that are
correct in the master's threads and under gevent's patched stdlib alike. The pure modules
of ``pingap/`` do not import this package (the layering test checks).
"""
