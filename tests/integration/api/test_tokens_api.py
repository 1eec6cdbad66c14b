"""Users' own API tokens over real HTTP against the in-process stack, on SQLite and on
PostgreSQL: ``GET/POST /tokens``, ``DELETE /tokens/{id}``, ``GET /limits`` and the
operators' ``/admin/tokens``. A new token inherits its creator's limits and never more; a
user holds at most ``VIDQ_MAX_TOKENS_PER_USER`` live ones; an expired or revoked token is
refused (a revoked one from the very next request, despite the authentication cache); the
secret is answered once and never listed; another user's token is 404 as if it did not
exist. The web app's page over these routes: tests/acceptance/test_webapp_keys.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import Stack, stack
from tests.support.stores import Database
from tests.support.wait import eventually

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}
DAY_S = 86_400


def create(client: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    r = client.post("/tokens", json={"name": name, **body})
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    assert made["token"].startswith("vq_") and made["name"] == name.strip()
    assert made["state"] == "active" and made["role"] == "user"
    return made


def tokens_of(client: httpx.Client, path: str = "/tokens", **params: Any) -> list[Any]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    listed: list[Any] = r.json()["tokens"]
    return listed


def works(s: Stack, secret: str) -> int:
    """The status of a plain user request made with ``secret``."""
    with s.client(secret) as c:
        return c.get("/requests").status_code


def test_create_list_use_and_revoke(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as s:
        ann = s.client(s.token("ann"))
        made = create(ann, "  laptop  ", expires_in_days=30)
        assert made["current"] is False
        expires = made["expires_at"]
        assert expires is not None and expires.endswith("Z")
        assert works(s, made["token"]) == 200
        with s.client(made["token"]) as new:
            # the new token sees its user's requests: it acts as ann
            r = new.post(f"/queue/{T2V}", json=SMALL)
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            assert ann.get(f"/requests/{rid}").status_code == 200
            listed = tokens_of(new)
            assert [t["current"] for t in listed] == [True, False]  # newest first
        listed = tokens_of(ann)
        assert [t["name"] for t in listed] == ["laptop", None]  # the minted one: no name
        assert listed[0]["id"] == made["id"] and listed[0]["expires_at"] == expires
        assert listed[1]["current"] is True and listed[1]["expires_at"] is None
        assert all("token" not in t for t in listed)
        admin = s.client(s.admin_token)
        for text in (ann.get("/tokens").text, admin.get("/admin/tokens").text):
            assert made["token"] not in text and made["token"][3:] not in text

        r = ann.delete(f"/tokens/{made['id']}")
        assert r.status_code == 204, r.text
        assert works(s, made["token"]) == 401
        assert tokens_of(ann)[0]["state"] == "revoked"
        assert ann.delete(f"/tokens/{made['id']}").status_code == 404  # already revoked


def test_a_revoked_token_is_refused_on_the_next_request(tmp_path: Path) -> None:
    """The authentication cache holds a token for 2 s: a revoke through this API drops it,
    so the revoked token's very next request is 401, on the fast status path too."""
    with stack(tmp_path / "data", workers=0) as s:
        ann = s.client(s.token("ann"))
        made = create(ann, "ci")
        with s.client(made["token"]) as key:
            rid = key.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
            status = f"/queue/{T2V}/requests/{rid}/status"
            assert key.get(status).status_code == 200  # cached now
            assert key.get("/requests").status_code == 200
            assert ann.delete(f"/tokens/{made['id']}").status_code == 204
            for path in (status, "/requests", "/tokens"):
                r = key.get(path)
                assert r.status_code == 401, (path, r.text)
        # revoking the token in use is allowed: it signs its holder out
        me = next(t for t in tokens_of(ann) if t["current"])
        assert ann.delete(f"/tokens/{me['id']}").status_code == 204
        assert ann.get("/requests").status_code == 401


def test_a_new_token_inherits_the_callers_limits_and_never_more(
    tmp_path: Path, database: Database
) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as s:
        limits = {"max_queued": 3, "rate_per_minute": 30, "daily_video_seconds": 50, "weight": 2}
        ann = s.client(s.token("ann", max_priority=7, **limits))
        made = create(ann, "phone")
        assert made["limits"] == {
            "max_priority": 7, "max_queued": 3, "max_running": None, "rate_per_minute": 30,
            "daily_video_seconds": 50, "daily_gpu_seconds": None, "weight": 2,
        }  # fmt: skip
        with s.client(made["token"]) as key:
            r = key.post(f"/queue/{T2V}", json={**SMALL, "priority": 8})
            assert r.status_code == 422, r.text  # over the inherited priority cap
            assert "maximum of 7" in r.json()["detail"][0]["msg"]
            for _ in range(3):
                assert key.post(f"/queue/{T2V}", json=SMALL).status_code == 200
            r = key.post(f"/queue/{T2V}", json=SMALL)
            assert r.status_code == 429 and r.json()["limit"] == "max_queued", r.text

        # an admin's new token is a user's: no operators' routes
        admin = s.client(s.admin_token)
        mine = create(admin, "no admin here")
        assert mine["role"] == "user"
        with s.client(mine["token"]) as key:
            assert key.get("/admin/tokens").status_code == 404
            assert key.get("/requests").status_code == 200

        worker = s.client(s.token("w", worker=True))
        assert worker.post("/tokens", json={"name": "w"}).status_code == 403
        assert worker.get("/tokens").status_code == 403


def test_expiry_is_inherited_and_an_expired_token_is_refused(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as s:
        ann = s.client(s.token("ann"))
        parent = create(ann, "a week", expires_in_days=7)
        with s.client(parent["token"]) as key:
            child = create(key, "longer than its parent", expires_in_days=30)
        assert child["expires_at"] == parent["expires_at"]
        never = create(ann, "forever")
        assert never["expires_at"] is None

        # a token that expires in a moment, as the store makes the API's
        from vidq.api.auth import hash_token, new_token

        secret = new_token()
        owner = s.store.get_token(never["id"])
        soon = s.store.create_user_token(
            "ann", hash_token(secret), owner.max_priority, owner.quota, name="soon",
            expires_at=s.store.now() + 1.0, max_live=10,
        )  # fmt: skip
        assert works(s, secret) == 200
        refused = eventually(lambda: works(s, secret) == 401, timeout=10, what="expiry")
        assert refused
        with s.client(secret) as c:
            r = c.get("/requests")
        assert r.status_code == 401 and "expired" in r.json()["detail"], r.text
        listed = {t["id"]: t for t in tokens_of(ann)}
        assert listed[soon.id]["state"] == "expired"


def test_the_per_user_cap_on_live_tokens(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, database=database, max_tokens_per_user=3) as s:
        ann = s.client(s.token("ann"))  # counts as one
        bob = s.client(s.token("bob"))
        first = create(ann, "one")
        create(ann, "two")
        r = ann.post("/tokens", json={"name": "three"})
        assert r.status_code == 409, r.text
        assert "3 live API keys" in r.json()["detail"] and "revoke one" in r.json()["detail"]
        assert len(tokens_of(ann)) == 3  # nothing stored
        create(bob, "bob's own")  # per user
        assert ann.delete(f"/tokens/{first['id']}").status_code == 204
        create(ann, "three")


def test_bad_bodies_name_the_field(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as s:
        ann = s.client(s.token("ann"))
        cases: list[tuple[Any, list[str]]] = [
            ({}, ["body", "name"]),
            ({"name": "   "}, ["body", "name"]),
            ({"name": "x" * 101}, ["body", "name"]),
            ({"name": 5}, ["body", "name"]),
            ({"name": "ok", "expires_in_days": 0}, ["body", "expires_in_days"]),
            ({"name": "ok", "expires_in_days": 3651}, ["body", "expires_in_days"]),
            ({"name": "ok", "expires_in_days": "soon"}, ["body", "expires_in_days"]),
            ({"name": "ok", "admin": True}, ["body", "admin"]),
        ]
        for body, loc in cases:
            r = ann.post("/tokens", json=body)
            assert r.status_code == 422, (body, r.text)
            assert [e["loc"] for e in r.json()["detail"]] == [loc], (body, r.text)
        assert ann.delete("/tokens/abc").status_code == 422
        assert len(tokens_of(ann)) == 1  # nothing stored


def test_per_user_isolation_of_every_route(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as s:
        ann, bob = s.client(s.token("ann")), s.client(s.token("bob"))
        made = create(ann, "ann's")
        ann_ids = {t["id"] for t in tokens_of(ann)}
        assert not ann_ids & {t["id"] for t in tokens_of(bob)}
        unknown = bob.delete("/tokens/999999")
        assert unknown.status_code == 404
        for tid in ann_ids:  # as if it did not exist
            r = bob.delete(f"/tokens/{tid}")
            assert r.status_code == 404, r.text
            assert r.json()["detail"] == unknown.json()["detail"].replace("999999", str(tid))
        assert works(s, made["token"]) == 200  # still ann's, still live
        # the operators' routes are 404 to users, as unknown routes
        for c in (ann, bob, s.client(made["token"])):
            assert c.get("/admin/tokens").status_code == 404
            assert c.get("/admin/tokens", params={"user": "ann"}).status_code == 404
            assert c.delete(f"/admin/tokens/{made['id']}").status_code == 404
        assert works(s, made["token"]) == 200
        assert ann.get("/limits").json()["usage"]["queued"] == 0
        assert bob.post(f"/queue/{T2V}", json=SMALL).status_code == 200
        assert ann.get("/limits").json()["usage"]["queued"] == 0  # bob's are not ann's
        assert bob.get("/limits").json()["usage"]["queued"] == 1


def test_operators_see_and_revoke_every_users_tokens(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as s:
        ann, bob = s.client(s.token("ann")), s.client(s.token("bob"))
        made = create(ann, "ann's laptop")
        create(bob, "bob's")
        admin = s.client(s.admin_token)
        everyone = tokens_of(admin, "/admin/tokens")
        assert {t["user"] for t in everyone} == {"admin", "ann", "bob"}
        assert {t["role"] for t in everyone if t["user"] == "admin"} == {"admin"}
        only_ann = tokens_of(admin, "/admin/tokens", user="ann")
        assert {t["user"] for t in only_ann} == {"ann"} and len(only_ann) == 2
        assert only_ann[0]["name"] == "ann's laptop"
        assert tokens_of(admin, "/admin/tokens", user="nobody") == []
        assert works(s, made["token"]) == 200
        assert admin.delete(f"/admin/tokens/{made['id']}").status_code == 204
        assert works(s, made["token"]) == 401  # on the next request
        assert admin.delete(f"/admin/tokens/{made['id']}").status_code == 404
        assert admin.delete("/admin/tokens/999999").status_code == 404
        assert bob.get("/requests").status_code == 200


def test_limits_answer_the_tokens_limits_and_todays_counters(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as s:
        ann = s.client(s.token("ann", max_priority=5, max_queued=4, daily_video_seconds=60))
        body = ann.get("/limits").json()
        assert body["limits"]["max_priority"] == 5 and body["limits"]["max_queued"] == 4
        assert body["limits"]["max_running"] is None and body["expires_at"] is None
        assert body["usage"] == {
            "queued": 0, "running": 0, "last_minute": 0, "video_seconds_today": 0,
            "gpu_seconds_today": 0,
        }  # fmt: skip
        assert ann.post(f"/queue/{T2V}", json=SMALL).status_code == 200
        now = ann.get("/limits").json()["usage"]
        assert (now["queued"], now["last_minute"]) == (1, 1)
        assert 1.0 <= now["video_seconds_today"] <= 1.2
        assert s.client(None).get("/limits").status_code == 401


@pytest.mark.parametrize("path", ["/tokens", "/limits"])
def test_no_token_is_401(tmp_path: Path, path: str) -> None:
    with stack(tmp_path / "data", workers=0) as s, s.client(None) as anon:
        assert anon.get(path).status_code == 401
        assert anon.post("/tokens", json={"name": "x"}).status_code == 401
        assert anon.delete("/tokens/1").status_code == 401
