"""One agent per cluster that publishes its registry's services to NATS JetStream.

``edge_sync.core`` is pure (source listings and the time in, what to publish
and when out); ``edge_sync.io`` holds one adapter per source and one for NATS.
See docs/edge.md.
"""
