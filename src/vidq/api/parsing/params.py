"""Path and query parameters: the model a path names, a request id, boolean flags."""

from __future__ import annotations

import re

from vidq.catalog import Model, closest_model, get_model
from vidq.errors import InvalidInput, InvalidRequestId, NotFound

_REQUEST_ID = re.compile(r"[0-9]{1,18}")


def model_or_404(model_id: str) -> Model:
    """The model a path names; 404 otherwise, with the nearest model id if one is close
    (the one place both dialects resolve a model id)."""
    model = get_model(model_id)
    if model is None:
        near = closest_model(model_id)
        hint = f"; did you mean '{near}'?" if near else "."
        raise NotFound(f"Unknown model '{model_id[:100]}'{hint}")
    return model


def request_id(value: str) -> int:
    """A path's request id: a decimal number (400 otherwise)."""
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidRequestId()
    return int(value)


def flag(value: str | None, name: str) -> bool:
    """A boolean query parameter (absent: false); 422 naming it if it is not one."""
    text = (value or "false").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInput(name, "must be true or false", loc=[name], where="query")


def truthy(value: str | None) -> bool:
    """A lenient boolean query parameter, as fal's clients send them (anything else: false)."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
