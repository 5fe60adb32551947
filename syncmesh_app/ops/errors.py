"""Errors the operator commands turn into exit statuses (kept import-light for the CLI)."""

from __future__ import annotations

__all__ = ["NoAnswer"]


class NoAnswer(Exception):
    """Nothing answered (no NATS, no registry replica, no stream): exit status 1."""
