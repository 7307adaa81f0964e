"""The client-server HTTP API: one module per endpoint family."""
