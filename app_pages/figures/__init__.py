"""Figure builders, one module per page: what a page draws, built from core's typed results."""
