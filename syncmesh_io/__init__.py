"""IO plumbing shared by every process: NATS connection, retry, the HTTP server."""
