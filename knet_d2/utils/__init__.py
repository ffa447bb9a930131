"""Small helpers that import nothing from the rest of ``knet_d2`` (the lowest layer)."""
