"""PyTorch networks and their shipped weights (``weights/*.pt`` with a ``*.json`` config)."""
