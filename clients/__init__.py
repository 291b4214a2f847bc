"""Client-side logic per method (pure torch, no Flower imports)."""
