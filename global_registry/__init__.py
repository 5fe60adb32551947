"""The global registry: every cluster's service state from NATS, one validated view.

``global_registry.core`` is pure (view, validation, staleness, ranking, probe
state machine); ``global_registry.io`` holds the stream reader, the probe
runner, the NATS API and the admin HTTP routes. See docs/registry.md.
"""
