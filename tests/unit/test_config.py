"""Settings in typed groups: every historical VIDQ_* variable still sets the same field,
lists and maps are parsed once, CLI flags go on top of the environment."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from vidq.config import ComfyUISettings, Settings, WanSettings, WorkerSettings
from vidq.config_doc import effective, mask, setting_infos

# The variables vidq has always read; renaming one breaks deployments.
HISTORICAL = {
    "VIDQ_DATA_DIR", "VIDQ_HOST", "VIDQ_PORT", "VIDQ_WORKERS", "VIDQ_PUBLIC_URL",
    "VIDQ_DATABASE_URL", "VIDQ_STORAGE_URL", "VIDQ_BUCKET", "VIDQ_SECRET_KEY",
    "VIDQ_SIGNED_URL_TTL", "VIDQ_LEASE_SECONDS", "VIDQ_MAX_ATTEMPTS", "VIDQ_POLL_INTERVAL",
    "VIDQ_MAX_BODY_BYTES", "VIDQ_POOLS", "VIDQ_ENGINE", "VIDQ_ENGINES", "VIDQ_MODELS_DIR",
    "VIDQ_WAN_BASE", "VIDQ_WAN_DEVICE", "VIDQ_WAN_DTYPE", "VIDQ_WAN_ATTENTION",
    "VIDQ_WAN_VAE_TILING", "VIDQ_WAN_OFFLOAD", "VIDQ_REAPER_INTERVAL", "VIDQ_DRAIN_SECONDS",
    "VIDQ_PREVIEW_STEP_SECONDS", "VIDQ_COMFYUI_URL", "VIDQ_COMFYUI_WORKFLOWS_DIR",
    "VIDQ_COMFYUI_JOB_TIMEOUT", "VIDQ_COMFYUI_HTTP_TIMEOUT", "VIDQ_COMFYUI_CONNECT_WAIT",
    "VIDQ_LOG_LEVEL", "VIDQ_MAX_INPUT_BYTES", "VIDQ_MAX_IMAGE_PIXELS",
    "VIDQ_MAX_AUDIO_SECONDS", "VIDQ_MAX_VIDEO_SECONDS", "VIDQ_FETCH_TIMEOUT",
    "VIDQ_FETCH_ALLOW_HTTP", "VIDQ_FETCH_ALLOW_NETWORKS", "VIDQ_WEBHOOK_ALLOW_LOOPBACK_HTTP",
    "VIDQ_WEBHOOK_MAX_ATTEMPTS",
}  # fmt: skip


def test_every_historical_variable_is_still_a_setting() -> None:
    names = [info.env for info in setting_infos()]
    # No two fields answer to one variable, but the one models folder the diffusers engines
    # (wan, ltx2) both read from.
    shared = [n for n in names if n == "VIDQ_MODELS_DIR"]
    assert len(shared) == 2
    assert len(names) - len(shared) == len(set(names) - {"VIDQ_MODELS_DIR"})
    assert HISTORICAL <= set(names)


# Variables whose values are checked beyond their type (a GPU list is not any list).
SAMPLES = {"VIDQ_GPUS": "0,2"}


def _sample(type_words: str, env: str = "") -> str:
    """A valid raw value for a variable of this type, unlike every default."""
    if env in SAMPLES:
        return SAMPLES[env]
    if type_words.startswith("one of"):
        return type_words.split("`")[-2]  # the last choice (defaults are the first)
    for words, raw in (
        ("boolean", "true"),
        ("integer", "4096"),
        ("number", "4.5"),
        ("IP networks", "10.0.0.0/8"),
        ("key=value", "wan22-t2v=wan"),
        ("comma-separated list", "wan22-t2v,wan22-i2v"),
        ("path", "/srv/vidq-sample"),
    ):
        if words in type_words:
            return raw
    return "sample-value"


def test_each_variable_sets_its_own_field(monkeypatch: pytest.MonkeyPatch) -> None:
    infos = list(setting_infos())
    for info in infos:
        monkeypatch.setenv(info.env, _sample(info.type, info.env))
    rows = {row.info.env: row for row in effective(Settings())}
    for info in infos:
        row = rows[info.env]
        assert row.source == "env", info.env
        expected = "***" if info.type == "secret string" else _sample(info.type, info.env)
        assert row.value == expected, info.env


def test_lists_and_maps_are_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDQ_POOLS", " wan22-t2v, wan22-i2v ,")
    monkeypatch.setenv("VIDQ_ENGINES", "wan22-t2v=wan, wan22-s2v = comfyui")
    monkeypatch.setenv("VIDQ_COMFYUI_URL", "http://a:8188/, https://b")
    monkeypatch.setenv("VIDQ_FETCH_ALLOW_NETWORKS", "127.0.0.1/32, 10.1.2.3/8, ::1")
    settings = Settings()
    assert settings.worker.pools == ("wan22-t2v", "wan22-i2v")
    assert settings.worker.engines == {"wan22-t2v": "wan", "wan22-s2v": "comfyui"}
    assert settings.worker.engine_for("wan22-s2v") == "comfyui"
    assert settings.worker.engine_for("wan22-i2v") == "preview"  # VIDQ_ENGINE's default
    assert settings.comfyui.urls == ("http://a:8188", "https://b")
    assert settings.limits.fetch_allow_networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),  # host bits dropped, as before
        ipaddress.ip_network("::1/128"),
    )


def test_an_empty_pools_variable_means_every_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDQ_POOLS", "")
    assert WorkerSettings().pools is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VIDQ_FETCH_ALLOW_NETWORKS", "127.0.0.1/32,not-a-network"),
        ("VIDQ_ENGINES", "wan22-t2v"),
        ("VIDQ_WAN_BASE", "a15b"),
        ("VIDQ_MAX_ATTEMPTS", "0"),
    ],
)
def test_bad_values_fail_at_startup(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_flags_override_the_environment_and_keep_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VIDQ_HOST", "0.0.0.0")
    monkeypatch.setenv("VIDQ_PORT", "8001")
    monkeypatch.setenv("VIDQ_WAN_BASE", "ti2v-5b")
    settings = Settings.load(data_dir=tmp_path, server={"port": 9000, "host": None})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9000)
    assert settings.data_dir == tmp_path and settings.wan.base == "ti2v-5b"
    assert settings.worker.pools is None
    assert Settings.load(worker={"pools": "wan22-s2v"}).worker.pools == ("wan22-s2v",)
    with pytest.raises(TypeError, match="unknown settings group 'nope'"):
        Settings.load(nope={"x": 1})


def test_urls_default_into_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings.load(data_dir=tmp_path)
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path.resolve()}/vidq.db"
    assert settings.resolved_storage_url() == f"file://{tmp_path.resolve()}/blobs"
    monkeypatch.setenv("VIDQ_DATABASE_URL", "postgresql://db/vidq")
    assert Settings().resolved_database_url() == "postgresql://db/vidq"


def test_secret_key_is_never_in_a_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDQ_SECRET_KEY", "do-not-print-me")
    settings = Settings()
    assert isinstance(settings.storage.secret_key, SecretStr)
    assert settings.storage.secret_key.get_secret_value() == "do-not-print-me"
    assert "do-not-print-me" not in repr(settings)


def test_engine_groups_cross_to_the_child_as_json(tmp_path: Path) -> None:
    wan = WanSettings(models_dir=tmp_path, base="ti2v-5b", offload=True)
    assert WanSettings.model_validate(json.loads(json.dumps(wan.model_dump(mode="json")))) == wan
    comfy = ComfyUISettings(urls="http://a,http://b", workflows_dir=tmp_path)
    again = ComfyUISettings.model_validate(json.loads(json.dumps(comfy.model_dump(mode="json"))))
    assert again == comfy and again.urls == ("http://a", "http://b")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://vidq:hunter2@db:5432/vidq", "postgresql://vidq:***@db:5432/vidq"),
        ("postgresql://db/vidq?password=hunter2&sslmode=require",
         "postgresql://db/vidq?password=***&sslmode=require"),
        ("https://tok-abc@comfy.example/x", "https://***@comfy.example/x"),
        ("http://a:8188,http://u:p@b", "http://a:8188,http://u:***@b"),
        ("s3://bucket", "s3://bucket"),
        ("sqlite:////srv/vidq/vidq.db", "sqlite:////srv/vidq/vidq.db"),
        ("file:///srv/vidq/blobs", "file:///srv/vidq/blobs"),
    ],
)  # fmt: skip
def test_mask_hides_url_passwords_and_tokens(url: str, shown: str) -> None:
    assert mask(url) == shown
