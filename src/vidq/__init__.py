"""vidq: a self-hosted video-generation queue service."""

__all__: list[str] = []
__version__ = "0.1.0"
