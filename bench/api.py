"""API throughput: submits/s and status polls/s with a deep queue, against a bare Starlette
JSON endpoint served the same way (uvicorn, same machine, same run, same load generator).

    python bench/api.py [--jobs 10000] [--seconds 8] [--concurrency 16]

Targets (issue 2): status polls >= 0.5x the bare endpoint's rate with p99 < 20 ms;
submits >= 300/s. The load generator is a keep-alive HTTP/1.1 client on raw asyncio
sockets (httpx itself would be the bottleneck on a small machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import free_port, serve  # noqa: E402

Request = Callable[[int], bytes]


def get(path: str, token: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode()


def post(path: str, body: bytes, token: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    return status


async def load(
    port: int, make: Request, *, total: int | None, seconds: float, concurrency: int
) -> dict[str, float]:
    """Drive requests from ``concurrency`` keep-alive connections; latency per request."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total if total is not None else 10**12))
    deadline = time.perf_counter() + seconds

    async def conn() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                if total is None and time.perf_counter() > deadline:
                    break
                t0 = time.perf_counter()
                writer.write(make(i))
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    errors += 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
    }


def start_bare() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    code = (
        "import uvicorn; from bench.bare_app import app; "
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_config=None, "
        "access_log=False, server_header=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    for _ in range(200):
        try:
            asyncio.run(load(port, lambda i: get("/status"), total=1, seconds=1, concurrency=1))
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("bare server did not start")


def row(name: str, r: dict[str, float], base: dict[str, float] | None = None) -> str:
    ratio = f"{r['rate'] / base['rate']:.2f}x" if base else "1.00x"
    return (
        f"{name:<28} {r['rate']:>9.0f}/s {ratio:>7}  p50 {r['p50_ms']:6.2f} ms  "
        f"p99 {r['p99_ms']:6.2f} ms  errors {int(r['errors'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    body = json.dumps({"prompt": "a cat", "width": 1280, "height": 720, "duration": 5}).encode()

    bare, bare_port = start_bare()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            serve(Path(tmp), workers=0) as server,
        ):
            port = int(server.url.rsplit(":", 1)[1])
            token = server.token("bench", max_priority=1000)
            model = "/queue/wan22-fast-t2v"
            print(
                f"vidq {server.url} (SQLite, no workers), bare Starlette :{bare_port}, "
                f"concurrency {args.concurrency}, cpus {os.cpu_count()}"
            )

            bare_post = asyncio.run(
                load(
                    bare_port,
                    lambda i: post("/submit", body),
                    total=None,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                )
            )
            submits = asyncio.run(
                load(
                    port,
                    lambda i: post(model, body, token),
                    total=args.jobs,
                    seconds=0,
                    concurrency=args.concurrency,
                )
            )
            print(row("bare POST", bare_post))
            print(row(f"submit ({args.jobs} jobs)", submits, bare_post))

            ids = list(range(1, args.jobs + 1))
            rng = random.Random(1)

            def poll(i: int) -> bytes:
                return get(f"{model}/requests/{rng.choice(ids)}/status", token)

            bare_get = asyncio.run(
                load(
                    bare_port,
                    lambda i: get("/status"),
                    total=None,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                )
            )
            polls = asyncio.run(
                load(port, poll, total=None, seconds=args.seconds, concurrency=args.concurrency)
            )
            print(row("bare GET", bare_get))
            print(row(f"status ({args.jobs} queued)", polls, bare_get))
            ok = (
                polls["rate"] >= 0.5 * bare_get["rate"]
                and polls["p99_ms"] < 20
                and submits["rate"] >= 300
            )
            print(
                f"targets (polls >= 0.5x bare, p99 < 20 ms, submits >= 300/s): "
                f"{'met' if ok else 'NOT met'}"
            )
    finally:
        bare.terminate()
        bare.wait(10)


if __name__ == "__main__":
    main()
