"""Entry point of a worker process: ``python -m workers``. Patches gevent first."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from workers.worker import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
