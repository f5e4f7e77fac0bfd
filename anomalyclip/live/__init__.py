"""Live video: sources scored causally as they arrive (``anomaly watch``)."""
