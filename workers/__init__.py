"""The gevent worker process: accept loop, HTTP/1 connections, upstream pools, probers."""
