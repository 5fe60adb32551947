"""asyncio adapters: the only place this package does IO."""
