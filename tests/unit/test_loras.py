"""The worker's LoRA fetcher and cache (``vidq.worker.loras``): files keyed by the sha256
of their bytes, least recently used evicted past the bound, concurrent writers of one
folder, and how fetch failures are classified (final or retried), over loopback HTTP."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.loopback import loopback_http
from vidq.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from vidq.media.outbound import parse_networks
from vidq.worker.loras import LoraCache, LoraFetcher, LoraOptions, shown

A = b"A" * 3000
B = b"B" * 3000


def _fetcher(folder: Path, **kw: object) -> LoraFetcher:
    options = LoraOptions(
        cache_dir=folder, allow_http=True, allow_networks=parse_networks("127.0.0.1/32"),
        timeout_s=10.0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return LoraFetcher(options)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_files_are_keyed_by_their_content(tmp_path: Path) -> None:
    routes = {"/a": (200, {}, A), "/a-again": (200, {}, A), "/b": (200, {}, B)}
    with loopback_http(routes) as (base, hits):
        fetcher = _fetcher(tmp_path / "cache")
        files = fetcher.fetch(
            [
                {"path": f"{base}/a?sig=1", "scale": 0.5, "transformer": "low"},
                {"path": f"{base}/a-again"},
                {"path": f"{base}/b", "scale": -1.0, "transformer": "both"},
            ]
        )
    assert hits == ["/a?sig=1", "/a-again", "/b"]
    assert [f.sha256 for f in files] == [_sha(A), _sha(A), _sha(B)]
    assert [(f.index, f.scale, f.transformer, f.size) for f in files] == [
        (0, 0.5, "low", 3000), (1, 1.0, "high", 3000), (2, -1.0, "both", 3000),
    ]  # fmt: skip
    assert files[0].path == files[1].path  # one file for the same bytes
    assert Path(files[0].path).read_bytes() == A and Path(files[2].path).read_bytes() == B
    assert files[0].name == f"loras[0] ({base}/a)"  # no query string
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [f"{_sha(A)}.safetensors", f"{_sha(B)}.safetensors"]
    )


def test_the_least_recently_used_files_are_evicted_past_the_bound(tmp_path: Path) -> None:
    cache = LoraCache(tmp_path, max_bytes=2 * 3000, grace_s=0)
    shas = []
    for i, data in enumerate((b"1" * 3000, b"2" * 3000, b"3" * 3000)):
        sha = _sha(data)
        (tmp_path / f"{sha}.safetensors").write_bytes(data)
        os.utime(tmp_path / f"{sha}.safetensors", (1000 + i, 1000 + i))
        shas.append(sha)
    (tmp_path / ".partial-x").write_bytes(b"p" * 10_000)  # being written: never evicted
    assert cache.get(shas[0]) is not None  # a use makes the oldest the newest
    assert cache.evict() == [shas[1]]
    assert cache.get(shas[1]) is None
    cache.max_bytes = 0
    assert cache.evict(keep=[shas[2]]) == [shas[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial-x", f"{shas[2]}.safetensors"]
    # a file used within the grace period stays, over the bound, for another slot to load
    cache.grace_s = 60
    assert cache.get(shas[2]) is not None
    assert cache.evict() == [] and cache.get(shas[2]) is not None


def test_fetching_evicts_past_the_bound_but_never_the_jobs_own(tmp_path: Path) -> None:
    with loopback_http({"/a": (200, {}, A), "/b": (200, {}, B)}) as (base, _hits):
        fetcher = _fetcher(tmp_path, cache_bytes=4000, cache_grace_s=0)
        fetcher.fetch([{"path": f"{base}/a"}])
        time.sleep(0.01)  # distinct modification times
        both = fetcher.fetch([{"path": f"{base}/a"}, {"path": f"{base}/b"}])
        assert all(Path(f.path).exists() for f in both), "over the bound, the job keeps its own"
        fetcher.fetch([{"path": f"{base}/b"}])
    assert [p.name for p in tmp_path.iterdir()] == [f"{_sha(B)}.safetensors"]


def test_concurrent_writers_of_one_folder_end_with_one_whole_file(tmp_path: Path) -> None:
    big = os.urandom(2 * 1024 * 1024)
    with loopback_http({"/big": (200, {}, big)}) as (base, hits):
        fetchers = [_fetcher(tmp_path) for _ in range(6)]  # as six GPU slots would
        paths: list[str] = []
        errors: list[BaseException] = []
        start = threading.Barrier(len(fetchers))

        def slot(fetcher: LoraFetcher) -> None:
            start.wait()
            try:
                paths.append(fetcher.fetch([{"path": f"{base}/big"}])[0].path)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=slot, args=(f,)) for f in fetchers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and len(hits) == 6
    assert set(paths) == {str(tmp_path / f"{_sha(big)}.safetensors")}
    assert [p.name for p in tmp_path.iterdir()] == [f"{_sha(big)}.safetensors"]
    assert hashlib.sha256(Path(paths[0]).read_bytes()).hexdigest() == _sha(big)


def test_final_failures_name_the_lora_and_outages_are_retryable(tmp_path: Path) -> None:
    routes = {
        "/missing": (404, {}, b""),
        "/down": (503, {}, b""),
        "/big": (200, {}, b"x" * 5000),
        "/ok": (200, {}, A),
    }
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]  # nothing listens once the socket is closed
    with loopback_http(routes) as (base, _hits):
        fetcher = _fetcher(tmp_path, max_bytes=4096)
        with pytest.raises(InvalidInput) as err:
            fetcher.fetch([{"path": f"{base}/ok"}, {"path": f"{base}/missing?X-Sig=s3cr3t"}])
        assert not isinstance(err.value, ServiceUnavailable)
        assert str(err.value).startswith(f"loras[1] ({base}/missing): URL answered HTTP 404")
        assert "s3cr3t" not in str(err.value)
        with pytest.raises(PayloadTooLarge, match=r"loras\[0\] .*VIDQ_MAX_LORA_BYTES"):
            fetcher.fetch([{"path": f"{base}/big"}])
        with pytest.raises(ServiceUnavailable, match=r"loras\[0\] .*HTTP 503"):
            fetcher.fetch([{"path": f"{base}/down"}])
        with pytest.raises(ServiceUnavailable, match=r"loras\[0\] .*URL fetch failed"):
            fetcher.fetch([{"path": f"http://127.0.0.1:{closed_port}/x"}])
        # outside the allowed networks, loopback is refused by the policy: final
        with pytest.raises(InvalidInput, match="not a public address"):
            fetcher.fetch([{"path": base.replace("127.0.0.1", "127.0.0.2") + "/big"}])
    # no partial file is left behind (the first call's good LoRA stays cached)
    assert [p.name for p in tmp_path.iterdir()] == [f"{_sha(A)}.safetensors"]


def test_shown_urls_keep_no_query_or_credentials() -> None:
    assert shown("https://user:pw@host.example:8443/a/b.safetensors?sig=1#x") == (
        "https://host.example:8443/a/b.safetensors"
    )
