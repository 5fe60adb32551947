"""Authoritative DNS for the syncmesh zone: nearest healthy gateway per client.

``dns_server.core`` is pure (question + client address + view -> wire answer,
through a cache of precomputed answers); ``dns_server.io`` binds it to UDP and
TCP. See docs/dns.md.
"""
