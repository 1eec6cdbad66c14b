"""What a `vidq` command costs to start: CPU and wall milliseconds per run of the commands
people and scripts run most (and the test suite runs about 180 times: `vidq worker` alone
about 50), each a fresh process, against a real `vidq serve --workers 0` on loopback.

    python bench/cli.py                        # this checkout, 10 runs of each command
    python bench/cli.py --against OTHER/src    # and another checkout's vidq, alternately

``--against`` runs each command the same way with ``PYTHONPATH=OTHER/src`` (the other
checkout's ``vidq`` package in this environment), interleaved run by run with this one, so
both see the same machine; it prints each command's CPU ratio (this / other). Prints one
JSON line per command: the median CPU (user + system, the process and its children) and
wall milliseconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import serve  # noqa: E402

MODEL = "wan22-fast-t2v"


def commands(request_id: str) -> dict[str, list[str]]:
    """Each measured command's arguments: server commands (the store, the settings) and
    client ones (the SDK over HTTP)."""
    return {
        "version": ["--version"],
        "token create": ["token", "create", "--user", "bench"],
        "token list": ["token", "list"],
        "gc --dry-run": ["gc", "--dry-run"],
        "worker --burst (empty queue)": ["worker", "--burst"],
        "submit --no-wait": ["submit", MODEL, "--prompt", "a bench", "--no-wait"],
        "status": ["status", request_id],
        "admin workers": ["admin", "workers"],
    }


def run_once(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """CPU and wall seconds of one ``vidq ARGS`` process (its children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "vidq", *args], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"vidq {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--against", type=Path, help="another checkout's src folder")
    args = parser.parse_args()
    variants = {"this": ""}
    if args.against is not None:
        variants["other"] = str(args.against.resolve())
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp) / "data", workers=0) as server:
        token = server.token("bench", admin=True)
        r = server.client(token).post(f"/queue/{MODEL}", json={"prompt": "x"})
        r.raise_for_status()
        env = {**server.env, "VIDQ_URL": server.url, "VIDQ_TOKEN": token}
        envs = {}
        for name, path in variants.items():
            envs[name] = dict(env)
            envs[name].pop("PYTHONPATH", None)
            envs[name].pop("PYTHONDONTWRITEBYTECODE", None)  # each variant's bytecode cached
            if path:
                envs[name]["PYTHONPATH"] = path
        for label, argv in commands(str(r.json()["request_id"])).items():
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
            for name in variants:
                run_once(argv, envs[name])  # a warm-up: compiled bytecode, a warm page cache
            for i in range(args.runs):
                order = list(variants) if i % 2 == 0 else list(reversed(variants))
                for name in order:
                    samples[name].append(run_once(argv, envs[name]))
            cpu = {name: statistics.median(c for c, _ in runs) for name, runs in samples.items()}
            row: dict[str, object] = {"command": label}
            for name, runs in samples.items():
                row[f"{name}_cpu_ms"] = round(cpu[name] * 1000)
                row[f"{name}_wall_ms"] = round(statistics.median(w for _, w in runs) * 1000)
            if "other" in cpu:
                row["cpu_ratio"] = round(cpu["this"] / cpu["other"], 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
