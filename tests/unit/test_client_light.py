"""The client SDK imports nothing of the server."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.processes import ROOT

SERVER_MODULES = (
    "fastapi", "starlette", "sqlalchemy", "alembic", "psycopg", "boto3", "botocore", "av",
    "PIL", "numpy", "torch", "uvicorn", "pydantic", "vidq.api", "vidq.store", "vidq.blobs",
    "vidq.worker", "vidq.engines", "vidq.media",
)  # fmt: skip


def test_importing_vidq_and_its_client_loads_no_server_module() -> None:
    code = (
        "import sys, json, vidq, vidq.client; "
        "c = vidq.Client('http://127.0.0.1:9', 't'); c.close(); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(out.stdout)
    assert "httpx" in loaded and "vidq.client" in loaded
    bad = [m for m in loaded if m.split(".")[0] in SERVER_MODULES or m.startswith(SERVER_MODULES)]
    assert bad == []
