"""Pure core: no asyncio, sockets, clocks or NATS; time comes in as ``now``."""
