"""Engines: the Engine protocol (``base``), its implementations and the registry table.

An engine's module is imported only when the engine is created (in the engine child
process), so optional dependencies (torch, diffusers) load only where that engine runs.
Each engine class is built as ``cls(settings, pools)``: its own settings group (declared
as ``cls.settings_type``) and the pools this worker runs it for. The two cross the process
boundary as JSON (``engine_options`` -> ``create_engine``), never pickled.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from vidq.engines.base import Engine, EngineJob, EngineResult
from vidq.errors import EngineUnavailable

__all__ = [
    "ENGINES",
    "Engine",
    "EngineJob",
    "EngineResult",
    "create_engine",
    "engine_options",
    "preload_modules",
]

ENGINES: dict[str, tuple[str, str]] = {  # name -> (module, class)
    "preview": ("vidq.engines.preview", "PreviewEngine"),
    "wan": ("vidq.engines.wan", "WanEngine"),
    "ltx2": ("vidq.engines.ltx2", "LTX2Engine"),
    "comfyui": ("vidq.engines.comfyui", "ComfyUIEngine"),
}


# Checks an engine can make before its module (and torch) is imported: a function of the
# engine's settings as JSON that raises what the engine's load would (``create_engine``).
PREFLIGHT: dict[str, tuple[str, str]] = {  # name -> (module, function)
    "ltx2": ("vidq.engines.ltx2_layout", "preflight"),
}


# Engines whose modules load no GPU library. A worker's fork server imports them once, so
# each engine child it forks (a fresh one after a crash, one per GPU slot) starts without
# importing them again. The wan engine's module imports torch: that stays in the child,
# after the child has chosen its GPU.
FORK_SERVER_PRELOAD = ("preview", "comfyui")


def preload_modules(name: str) -> list[str]:
    """The modules a fork server may import ahead for engine ``name`` (see above): its own
    module where it loads no GPU library, and the preview engine's for every engine. Its
    libraries (numpy, Pillow, PyAV) are the ones every engine's child writes its video
    with, and one fork server serves all of a process's children, whatever engine it was
    started for."""
    own = [ENGINES[name][0]] if name in FORK_SERVER_PRELOAD and name in ENGINES else []
    return list(dict.fromkeys([ENGINES["preview"][0], *own]))


def engine_options(settings: BaseModel | None, pools: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON-ready options ``create_engine`` builds an engine from (None: defaults)."""
    return {
        "settings": settings.model_dump(mode="json") if settings is not None else {},
        "pools": list(pools),
    }


def create_engine(name: str, options: Mapping[str, Any]) -> Engine:
    """The engine called ``name``, built from ``engine_options``; imports its module now.

    EngineUnavailable for a name the registry does not know, or an engine whose optional
    dependencies are not installed; what its ``PREFLIGHT`` check raises, before the import."""
    entry = ENGINES.get(name)
    if entry is None:
        raise EngineUnavailable(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
    module, class_name = entry
    if name in PREFLIGHT:
        check_module, function = PREFLIGHT[name]
        getattr(importlib.import_module(check_module), function)(options.get("settings", {}))
    try:
        cls = getattr(importlib.import_module(module), class_name)
    except ModuleNotFoundError as exc:
        raise EngineUnavailable(
            f"the {name} engine needs the Python package {exc.name!r}, which is not installed"
        ) from exc
    settings = cls.settings_type.model_validate(options.get("settings", {}))
    engine: Engine = cls(settings, pools=tuple(options.get("pools", ())))
    return engine
