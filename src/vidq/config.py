"""Settings, from ``VIDQ_*`` environment variables and CLI flags. Read only by entrypoints."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of vidq. Each is also the environment variable ``VIDQ_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="VIDQ_", extra="ignore")

    data_dir: Path = Field(Path("./var"), description="SQLite file, local blobs, secret key.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=0, description="In-process workers of `vidq serve`.")
    public_url: str | None = Field(None, description="Base of absolute URLs; else the request's.")
    database_url: str | None = Field(None, description="Default: sqlite:///<data_dir>/vidq.db")
    storage_url: str | None = Field(None, description="Default: file://<data_dir>/blobs")
    bucket: str = Field("vidq", description="Bucket name of the local store (s3:// names its own).")
    secret_key: str | None = Field(
        None, description="HMAC key of signed URLs; default: in data dir."
    )
    signed_url_ttl: int = Field(3600, ge=1, description="Seconds a signed download URL is valid.")
    lease_seconds: float = Field(30.0, gt=0, description="A claim's lease; heartbeats renew it.")
    max_attempts: int = Field(3, ge=1)
    poll_interval: float = Field(0.5, gt=0, description="Idle worker poll when not woken.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    pools: str | None = Field(
        None, description="Comma-separated pools a worker serves; all if unset."
    )
    engine: str = Field("preview", description="Default engine of pools not in `engines`.")
    engines: str | None = Field(
        None, description="Per-pool engines: 'wan22-t2v=wan,wan22-s2v=comfyui'."
    )
    models_dir: Path | None = Field(None, description="Local model weights (diffusers layout).")
    wan_base: Literal["a14b", "ti2v-5b"] = Field("a14b", description="Wan 2.2 model of `wan`.")
    wan_device: str = Field("auto", description="Device of the wan engine: auto | cuda | cpu.")
    wan_dtype: str = Field("bfloat16", description="Weights dtype: bfloat16 | float16 | float32.")
    wan_attention: str = Field("native", description="Attention backend: native | flash | sage.")
    wan_vae_tiling: bool = Field(False, description="Decode the VAE in tiles (lower peak memory).")
    wan_offload: bool = Field(False, description="Model CPU offload for GPUs too small for A14B.")
    reaper_interval: float = Field(2.0, gt=0)
    drain_seconds: float = Field(30.0, ge=0, description="On SIGTERM, how long a job may finish.")
    preview_step_seconds: float = Field(0.0, ge=0, description="Preview engine pause per step.")
    comfyui_url: str = Field(
        "http://127.0.0.1:8188",
        description="ComfyUI server(s) of the comfyui engine; comma-separated for several.",
    )
    comfyui_workflows_dir: Path | None = Field(
        None, description="Folder of workflow templates (<model id>.json or <kind>.json)."
    )
    comfyui_job_timeout: float = Field(
        3600.0, gt=0, description="Seconds one ComfyUI job may take."
    )
    comfyui_http_timeout: float = Field(
        30.0, gt=0, description="Seconds one ComfyUI HTTP call may take."
    )
    comfyui_connect_wait: float = Field(
        60.0, ge=0, description="Seconds to wait for a ComfyUI server to answer before retrying."
    )
    log_level: str = "INFO"
    # Input media (README "Inputs of every family"). Byte limits are 413, the rest 422.
    max_input_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Decoded size per input.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Width x height of an image.")
    max_audio_seconds: float = Field(60.0, gt=0, description="Longest audio input (S2V).")
    max_video_seconds: float = Field(30.0, gt=0, description="Longest video input (Foley).")
    fetch_timeout: float = Field(
        20.0,
        gt=0,
        description="Deadline of fetching a submit's input URLs, all of it: the wait for a "
        "fetch slot, connect, headers, redirects, body.",
    )
    fetch_allow_http: bool = Field(False, description="Allow http:// input URLs (local testing).")
    fetch_allow_networks: str | None = Field(
        None,
        description="Comma-separated non-global networks input URLs may reach, e.g. "
        "'127.0.0.1/32' (local testing only; never in production).",
    )

    fetch_concurrency: int = Field(
        16, ge=1, description="Submits fetching input URLs at once, per API process."
    )
    fetch_per_user: int = Field(
        4,
        ge=1,
        description="Submits of one user fetching input URLs at once, per API process; "
        "more wait, within `fetch_timeout`.",
    )
    decode_concurrency: int = Field(
        4, ge=1, description="Submits decoding and storing media inputs at once, per API process."
    )

    @field_validator("fetch_allow_networks")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        for item in (value or "").split(","):
            if item.strip():
                ipaddress.ip_network(item.strip(), strict=False)  # ValueError at startup
        return value

    webhook_allow_loopback_http: bool = Field(
        False,
        description="TESTS ONLY: accept http:// webhook targets on 127.0.0.1/::1/localhost.",
    )
    webhook_max_attempts: int = Field(8, ge=1, description="Webhook deliveries before giving up.")
    webhook_timeout: float = Field(
        10.0,
        gt=0,
        description="Deadline of one webhook delivery attempt: resolve, connect, send, "
        "the answer's headers.",
    )
    webhook_concurrency: int = Field(
        32, ge=1, description="Webhook deliveries in flight at once, per API process."
    )
    webhook_per_host: int = Field(
        4, ge=1, description="Webhook deliveries in flight to one receiver (host and port)."
    )
    webhook_per_user: int = Field(
        8, ge=1, description="Webhook deliveries in flight for one user's requests."
    )

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'vidq.db'}"

    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{self.data_dir.resolve() / 'blobs'}"

    def pool_list(self) -> list[str] | None:
        if not self.pools:
            return None
        return [p.strip() for p in self.pools.split(",") if p.strip()]

    def engine_for(self, pool: str) -> str:
        if self.engines:
            for item in self.engines.split(","):
                name, _, engine = item.partition("=")
                if name.strip() == pool and engine.strip():
                    return engine.strip()
        return self.engine
