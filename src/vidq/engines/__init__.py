"""Engines: the Engine protocol and its implementations (preview, wan, comfyui)."""

from vidq.engines.base import Engine, EngineJob, EngineResult, create_engine

__all__ = ["Engine", "EngineJob", "EngineResult", "create_engine"]
