"""Figure builders, one module per page: a page's numbers from core drawn as plotly figures."""
