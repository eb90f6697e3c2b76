"""Shared :class:`~optibase_edge.dedupe.DedupeStore` back ends (optional extras)."""
