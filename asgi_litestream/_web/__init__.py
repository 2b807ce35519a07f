"""The library's own HTTP routes: status snapshot, Prometheus metrics, status page."""
