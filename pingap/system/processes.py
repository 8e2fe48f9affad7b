"""Resource figures of a set of processes (the master and its workers), from psutil.

What pingap reports about "the process" (memory, threads, open files, TCP sockets) is
here the sum over the master and every worker, since the host's proxy is all of them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from typing import Any

from pingap.units import format_size_human


def process_figures(pids: Iterable[int]) -> dict[str, Any]:
    """Summed ``memory_mb``/``memory``, ``threads``, ``fd_count``, ``tcp_count``,
    ``tcp6_count`` of ``pids`` (a process that exited meanwhile is skipped), the first
    one's ``start_time``, and the host's memory, CPUs, architecture and kernel."""
    import psutil  # here: a process that is never asked never loads it

    rss = threads = fds = tcp = tcp6 = 0
    started = 0.0
    for position, pid in enumerate(pids):
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                rss += proc.memory_info().rss
                threads += proc.num_threads()
                fds += proc.num_fds()
                if position == 0:
                    started = proc.create_time()
            tcp += len(proc.net_connections("tcp4"))
            tcp6 += len(proc.net_connections("tcp6"))
        except psutil.Error:
            continue
    memory = psutil.virtual_memory()
    return {"memory_mb": rss // (1024 * 1024), "memory": format_size_human(rss),
            "threads": threads, "fd_count": fds, "tcp_count": tcp, "tcp6_count": tcp6,
            "start_time": int(started), "total_memory": format_size_human(memory.total),
            "used_memory": format_size_human(memory.used), "arch": platform.machine(),
            "kernel": platform.release(), "cpus": os.cpu_count() or 1,
            "physical_cpus": psutil.cpu_count(logical=False) or os.cpu_count() or 1}
