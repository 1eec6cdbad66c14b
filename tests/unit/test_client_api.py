"""``Client`` and ``AsyncClient`` (and their request handles) are one API: the same public
methods with the same signatures and docstrings, the asyncio ones being coroutines."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import vidq


def public_methods(cls: type) -> dict[str, object]:
    return {
        name: getattr(cls, name)
        for name in dir(cls)
        if not name.startswith("_") and callable(getattr(cls, name))
    }


@pytest.mark.parametrize(
    ("blocking", "awaiting"),
    [(vidq.Client, vidq.AsyncClient), (vidq.RequestHandle, vidq.AsyncRequestHandle)],
)
def test_the_two_clients_expose_the_same_methods(blocking: type, awaiting: type) -> None:
    sync_methods, async_methods = public_methods(blocking), public_methods(awaiting)
    assert sorted(sync_methods) == sorted(async_methods)
    assert len(sync_methods) >= 5
    for name, method in sync_methods.items():
        twin = async_methods[name]
        assert inspect.signature(method) == inspect.signature(twin), name
        assert not inspect.iscoroutinefunction(method), name
        assert inspect.iscoroutinefunction(twin), name
        if name != "close":
            assert method.__doc__ and method.__doc__ == twin.__doc__, name
    assert inspect.signature(blocking.__init__) == inspect.signature(awaiting.__init__)


def test_bound_methods_keep_their_kind() -> None:
    client, aclient = vidq.Client("http://127.0.0.1:9", "t"), vidq.AsyncClient("http://x", "t")
    try:
        for name in public_methods(vidq.Client):
            method, twin = getattr(client, name), getattr(aclient, name)
            assert inspect.signature(method) == inspect.signature(twin), name
            assert inspect.iscoroutinefunction(twin) and not inspect.iscoroutinefunction(method)
        assert list(inspect.signature(client.submit).parameters)[:2] == ["model_id", "inputs"]
    finally:
        client.close()
        asyncio.run(aclient.close())
