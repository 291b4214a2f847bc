"""Server-side strategies, one per method (Flower Message API)."""
