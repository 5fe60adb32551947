"""Authoritative DNS for the syncmesh zone: nearest healthy gateway per client.

``resolver`` is the pure core (question + client class + view -> records),
``core`` turns query bytes into response bytes through a cache of
precomputed wire answers, ``server`` binds it to UDP and TCP.
"""

from dns_server.config import DnsConfig
from dns_server.server import DnsServer, start_dns

__all__ = ["DnsConfig", "DnsServer", "start_dns"]
