"""Operator tooling behind the ``syncmesh`` command: logging setup, finding NATS,
the ``inventory`` / ``resolve`` / ``status`` commands and the process runner."""
