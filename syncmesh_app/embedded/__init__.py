"""Servers the product starts itself: the demo's embedded nats-server."""
