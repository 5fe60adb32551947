"""The global registry: consumes every cluster's service state from NATS, keeps
the global view, probes gateways and serves the view to DNS, NATS and HTTP.

Pure core (no asyncio): ``view``, ``ranking``, ``validate``, ``ingest``,
``probes``/``probe_fsm``/``rtt``, ``cidr_index``, ``snapshot``, ``logonce``.
asyncio adapters: ``stream_consumer``, ``probe_runner``, ``api``, ``admin``,
``watch`` and ``app`` (the process).
"""

__all__: list[str] = []
