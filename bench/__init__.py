"""Benchmarks: our stack against bare gevent-websocket, in the same run (see README.md)."""
