"""Business rules of the API, one module per resource; functions take keyword-only arguments."""
