"""Providers: one module per way of making a point-in-time image of a volume."""
