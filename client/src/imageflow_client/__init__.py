"""The `imageflow` command: a client of an ImageFlow server's REST API and WebSocket."""

__version__ = "0.1.0"
