"""The Python SDK (vidq.Client / vidq.AsyncClient) against a real `vidq serve`."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

import vidq
from tests.support.media import probe_mp4
from tests.support.stack import Stack, stack

SMALL = {"prompt": "a paper boat", "width": 128, "height": 128, "duration": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("sdk") / "data", preview_step_seconds=0.1) as s:
        yield s


def test_run_wait_and_download(server: Stack, tmp_path: Path) -> None:
    updates: list[vidq.Status] = []
    with vidq.Client(server.url, server.token("sdk")) as client:
        handle = client.submit("wan22-fast-t2v", SMALL)
        final = handle.wait(on_update=updates.append, poll_interval=0.05)
        assert final.status == "COMPLETED" and final.finished
        assert final.done == final.total > 0
        assert {u.status for u in updates} >= {"IN_PROGRESS", "COMPLETED"}
        path = handle.download(tmp_path / "out.mp4")
        info = probe_mp4(path.read_bytes(), tmp_path)
        assert (info.width, info.height, info.frames) == (128, 128, 17)
        # run() = submit + wait + result; binary_output gives a signed URL.
        result = client.run("wan22-fast-t2v", {**SMALL, "seed": 3}, binary_output=True)
        assert result["video"]["data_uri"].startswith(server.url + "/files/")
        again = client.get_handle(handle.request_id)  # the model is looked up
        assert again.model_id == "wan22-fast-t2v"
        assert again.download(tmp_path / "again.mp4").read_bytes() == path.read_bytes()
        page = client.requests(limit=1)
        assert len(page["requests"]) == 1 and page["next_before"] is not None


def test_local_files_are_encoded(tmp_path: Path) -> None:
    image = tmp_path / "frame.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    uri = vidq.encode_file(image)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == image.read_bytes()
    assert vidq.as_input("https://example.com/a.png") == "https://example.com/a.png"
    assert vidq.as_input(str(image)) == uri


def test_typed_errors(server: Stack) -> None:
    with vidq.Client(server.url, "vq_not-a-token") as client:
        with pytest.raises(vidq.AuthenticationError) as unauth:
            client.submit("wan22-fast-t2v", SMALL)
        assert unauth.value.status_code == 401
    with vidq.Client(server.url, server.token("errors")) as client:
        with pytest.raises(vidq.NotFoundError):
            client.submit("no-such-model", SMALL)
        with pytest.raises(vidq.ValidationError) as invalid:
            client.submit("wan22-fast-t2v", {**SMALL, "width": 100})
        assert invalid.value.errors[0]["loc"] == ["body", "width"]
        with pytest.raises(vidq.NotFoundError):
            client.get_handle(999999)
        with pytest.raises(vidq.BadRequestError):
            client.get_handle("12ab")
        done = client.submit("wan22-fast-t2v", SMALL)
        done.wait(poll_interval=0.05)
        with pytest.raises(vidq.ConflictError):
            done.cancel()
    with (
        vidq.Client("http://127.0.0.1:9", "t", retry=vidq.RetryPolicy(max_retries=1)) as c,
        pytest.raises(vidq.TransportError),
    ):
        c.requests()


def test_failed_request_and_too_large_body(tmp_path: Path) -> None:
    # The preview engine fails requests whose prompt holds "[fail]" (VIDQ_PREVIEW_FAIL_PROMPT).
    settings = {"preview_fail_prompt": "[fail]", "max_attempts": 1, "max_body_bytes": 4096}
    with stack(tmp_path / "data", **settings) as s:
        with vidq.Client(s.url, s.token("fails")) as client:
            with pytest.raises(vidq.PayloadTooLargeError) as big:
                client.submit("wan22-fast-t2v", {**SMALL, "negative_prompt": "x" * 5000})
            assert big.value.status_code == 413
            with pytest.raises(vidq.RequestFailed) as failed:
                client.run("wan22-t2v-fp8", {**SMALL, "prompt": "a [fail] on purpose"})
            assert failed.value.error_type == "PreviewFailure"
            assert "[fail]" in failed.value.error


def test_async_client(server: Stack, tmp_path: Path) -> None:
    async def main() -> tuple[Path, list[str]]:
        seen: list[str] = []
        async with vidq.AsyncClient(server.url, server.token("async")) as client:
            handle = await client.submit("wan22-fast-t2v", SMALL)
            await handle.wait(on_update=lambda s: seen.append(s.status), poll_interval=0.05)
            return await handle.download(tmp_path / "async.mp4"), seen

    path, seen = asyncio.run(main())
    assert seen[-1] == "COMPLETED"
    assert probe_mp4(path.read_bytes(), tmp_path).frames == 17
