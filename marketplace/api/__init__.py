"""The marketplace HTTP API: `create_app(settings)` builds it (see docs/api.md)."""
