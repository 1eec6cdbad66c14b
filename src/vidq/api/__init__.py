"""The HTTP API: ``create_app(settings, store, storage)``."""

from vidq.api.app import create_app

__all__ = ["create_app"]
