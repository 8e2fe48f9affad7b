"""The master process: listeners, worker life cycle, signals. Never imports gevent."""
