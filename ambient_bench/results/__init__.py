"""Long-form results (one row per cell × quantity) and tables in the paper's layout."""
