"""The contract layer: wire Structs, subjects, labels, validation.

Everything in syncmesh imports this package; it imports nothing of the project
and does no IO. See docs/architecture.md.
"""
