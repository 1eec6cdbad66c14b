"""Schemathesis over /openapi.json against the in-process stack: no input, valid
(positive) or invalid (negative), makes the API answer 5xx. Bounded: a few examples per
operation and mode (an operation with nothing that can be invalid gets no negative mode); the
count of generated cases is printed (run with -s to see it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.support.stack import stack

EXAMPLES = 6  # per operation and generation mode


def _can_be_invalid(raw: dict[str, Any]) -> bool:
    """Whether a request to the operation (its OpenAPI definition) can break its schema: it
    has a body, or a parameter other than a plain string in the path (any string is a
    valid path segment). For the others, negative generation can only end in Unsatisfiable,
    after about 0.5 CPU-s of draws each."""
    if "requestBody" in raw:
        return True
    for param in raw.get("parameters", []):
        schema = param.get("schema", {})
        plain = schema.get("type") == "string" and set(schema) <= {"type", "title", "description"}
        if param.get("in") != "path" or not plain:
            return True
    return False


@pytest.mark.slow
def test_no_server_errors_over_the_openapi_schema(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []
    skipped = 0  # operations without a negative mode
    with stack(tmp_path / "data", workers=0, fetch_timeout=2) as server:
        token = server.token("fuzzer", max_priority=1000)
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 20
        positive, negative = (
            schemathesis.GenerationMode.POSITIVE,
            schemathesis.GenerationMode.NEGATIVE,
        )
        for operation in operations:
            raw = operation.definition.raw
            modes = (positive, negative) if _can_be_invalid(raw) else (positive,)
            skipped += len(modes) == 1
            for mode in modes:

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: schemathesis.Case) -> None:
                    response = case.call(
                        base_url=server.url,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                    )
                    seen.append((case.operation.label, response.status_code))
                    assert response.status_code < 500, (case.operation.label, response.text[:300])

                try:
                    run()
                except Unsatisfiable:
                    # No invalid request exists for some operations (no parameters).
                    assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    statuses = sorted({status for _, status in seen})
    print(
        f"\nschemathesis: {len(seen)} generated cases over {len(operations)} operations "
        f"({skipped} with nothing that can be invalid); statuses {statuses}"
    )
    assert len(seen) >= len(operations) * 2 and max(statuses) < 500
