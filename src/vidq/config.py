"""Settings in typed groups, from ``VIDQ_*`` environment variables and CLI flags.

Read only by entrypoints (``cli.py``), which pass the groups down: the API gets
``Settings``, each engine its own group (``PreviewSettings``, ``WanSettings``,
``ComfyUISettings``). Every group is its own ``BaseSettings`` with an ``env_prefix``, so the
environment variable of a field is ``<prefix><FIELD>`` (``VIDQ_WAN_`` + ``base`` ->
``VIDQ_WAN_BASE``); the two exceptions carry an explicit alias (``VIDQ_MODELS_DIR``,
``VIDQ_COMFYUI_URL``). Lists and maps are parsed here, once: the rest of the code sees
tuples, dicts and ``ipaddress`` networks, never comma-separated strings.

``docs/configuration.md`` is generated from these classes (``python -m vidq.config_doc``),
so a field's description is its documentation; ``vidq config`` prints the effective values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# One GPU as CUDA_VISIBLE_DEVICES names it: an index as nvidia-smi numbers them, or a UUID.
_GPU_ENTRY = re.compile(r"[0-9]+|(?:GPU|MIG)-[0-9A-Za-z-]+")


def _split(value: Any) -> Any:
    """``'a, b,,c'`` -> ``['a', 'b', 'c']``; anything else is left to the field's type."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class _Group(BaseSettings):
    """A settings group: its own environment prefix, immutable once read."""

    model_config = SettingsConfigDict(
        env_prefix="VIDQ_", extra="ignore", frozen=True, validate_by_name=True
    )


class ServerSettings(_Group):
    """The HTTP API process (`vidq serve`)."""

    host: str = Field(default="127.0.0.1", description="Address `vidq serve` binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `vidq serve` listens on.")
    workers: int = Field(
        default=1, ge=0, description="In-process workers of `vidq serve`; 0 runs the API only."
    )
    public_url: str | None = Field(
        default=None,
        description="Base of the absolute URLs the API returns (behind a proxy); "
        "unset: the base URL of each request.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Without `public_url`, the Host names whose requests are answered (and "
        "reflected in returned URLs); others get 400. `*.example.com` matches subdomains. "
        "Unset: `host`, localhost, 127.0.0.1 and ::1.",
    )

    metrics_public: bool = Field(
        default=False,
        description="Serve `GET /metrics` without a token (default: admin tokens only).",
    )

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        return _split(value)

    def trusted_hosts(self) -> tuple[str, ...] | None:
        """The Host names to answer; None when every Host is fine (``public_url`` set,
        so no request's Host ever ends up in a URL)."""
        if self.public_url:
            return None
        return self.allowed_hosts or (self.host, "localhost", "127.0.0.1", "::1")


class StoreSettings(_Group):
    """The job store (queue database)."""

    database_url: str | None = Field(
        default=None,
        description="Job store: `sqlite:///<path>` or `postgresql://user:password@host/db`; "
        "unset: `sqlite:///<data_dir>/vidq.db`.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts a job gets (expired leases and retryable errors)."
    )
    reaper_interval: float = Field(
        default=2.0, gt=0, description="Seconds between sweeps that give expired leases back."
    )
    fair_share: bool = Field(
        default=True,
        description="Within a pool and rank (tier, priority), workers serve users in turn "
        "(weighted round robin, least recently served first; a token's `--weight`); "
        "`false`: first in, first out. Set it alike on the API and every worker.",
    )


class StorageSettings(_Group):
    """Object storage of inputs and outputs, and URL signing."""

    storage_url: str | None = Field(
        default=None,
        description="Object storage: `file:///<folder>` or `s3://<bucket>` (endpoint and "
        "credentials from the `AWS_*` variables); unset: `file://<data_dir>/blobs`.",
    )
    bucket: str = Field(
        default="vidq", description="Bucket name of the local store (`s3://` URLs name their own)."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of signed URLs and webhook signatures; the same on every API "
        "replica and worker. Unset: generated once in `<data_dir>/secret.key`.",
    )
    signed_url_ttl: int = Field(
        default=3600,
        ge=1,
        description="Seconds a signed download URL stays valid (results in binary mode).",
    )
    download_url_ttl: int = Field(
        default=7200,
        ge=1,
        description="Seconds a URL from `GET /fal/download/...` stays valid (the spec's "
        "example signs for 7200 s).",
    )


class WorkerSettings(_Group):
    """What a worker serves and how it holds its jobs."""

    pools: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        default=None,
        description="Pools this worker serves; unset: every pool of the models file but its "
        "opt-in ones (`opt_in = true`, e.g. LTX-2's), which a worker serves only when named.",
    )
    engine: str = Field(
        default="preview",
        description="Engine of the pools not named in `engines`: preview, wan or comfyui.",
    )
    engines: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="Per-pool engines as `pool=engine` pairs, e.g. "
        "`wan22-t2v=wan,wan22-s2v=comfyui`.",
    )
    lease_seconds: float = Field(
        default=30.0, gt=0, description="Lease of a claimed job; the worker's heartbeats renew it."
    )
    poll_interval: float = Field(
        default=0.5, gt=0, description="Seconds an idle worker waits for new jobs when not woken."
    )
    drain_seconds: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long the current job may still finish."
    )
    retry_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        description="After a retryable failure (storage or engine trouble), the job waits "
        "about this long before its next attempt, doubling per attempt (with jitter).",
    )
    retry_backoff_max_seconds: float = Field(
        default=60.0, ge=0, description="The longest wait between two attempts of a job."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which `vidq worker` serves its own `/metrics`; unset: none.",
    )
    upload_retry_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long a worker retries uploading a finished video while the storage "
        "fails (full disk, S3 errors) before it gives the attempt up.",
    )
    gpus: Annotated[tuple[str, ...] | None, NoDecode] = Field(
        default=None,
        description="`vidq worker` runs one job slot per GPU, each with its own engine child "
        "pinned by `CUDA_VISIBLE_DEVICES`: `all` (the entries of `CUDA_VISIBLE_DEVICES` if "
        "set, else every GPU `nvidia-smi` lists) or GPU indices / UUIDs such as `0,1,3`. "
        "Unset: one job at a time, engines see the worker's devices.",
    )
    warmup: bool = Field(
        default=False,
        description="Before its first claim a worker loads its engines (`/health` answers 503 "
        '"warming" until then); with this, it also runs one tiny text-to-video generation '
        "on each. A `--burst` worker loads on its first job instead, unless this is set.",
    )
    preview_interval: float = Field(
        default=2.0,
        ge=0,
        description="While a job runs, its engine shows the video so far as a live preview "
        "(the status's `preview`) at most once per this many seconds; 0: no previews.",
    )
    engine_probe_seconds: float = Field(
        default=1.0,
        gt=0,
        description="A worker whose engine is down (its ComfyUI servers unreachable, or its "
        "engine child failing to start) claims nothing and probes the engine after this "
        "many seconds, doubling the wait after each probe that fails.",
    )
    engine_probe_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="The longest wait between two probes of an engine that is down; an idle "
        "worker also probes its running engines this often.",
    )
    engine_load_failures: int = Field(
        default=3,
        ge=1,
        description="Failed starts of an engine child in a row (its load raising, or the "
        "child dying before it is ready) after which the worker holds the engine down.",
    )
    max_jobs: int | None = Field(
        default=None,
        ge=1,
        description="`vidq worker` exits (code 0) after this many jobs, counted across its "
        "GPU slots; unset: no limit.",
    )
    max_idle_seconds: float | None = Field(
        default=None,
        gt=0,
        description="`vidq worker` exits (code 0) after this many seconds in which none of "
        "its slots ran a job (scale to zero); unset: it waits for work forever.",
    )
    server: str | None = Field(
        default=None,
        description="Remote-worker mode: the API's base URL (`https://...`); the worker then "
        "talks only to the API's `/worker/v1` routes and needs no database, storage or data "
        "dir. Unset: a local worker on the configured job store and storage.",
    )
    worker_token: SecretStr | None = Field(
        default=None,
        description="Remote-worker mode: the worker token (`vidq token create --worker`).",
    )
    insecure_http: bool = Field(
        default=False,
        description="Remote-worker mode: allow a plain `http://` server that is not on "
        "loopback (the token then crosses the network in clear).",
    )
    lora_cache_dir: Path | None = Field(
        default=None,
        description="Where a worker keeps the LoRAs it fetched for requests, by content "
        "hash; unset: `lora-cache` in the data folder.",
    )
    lora_cache_bytes: int = Field(
        default=20 * 1024**3,
        ge=0,
        description="Bytes of LoRAs the cache keeps; past it the least recently used are "
        "deleted (never those of the job at hand).",
    )
    lora_fetch_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Deadline of fetching one LoRA URL, all of it (connect, headers, "
        "redirects, body): LoRAs are hundreds of megabytes, unlike input media.",
    )

    @field_validator("pools", mode="before")
    @classmethod
    def _pool_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("pools", mode="after")
    @classmethod
    def _no_empty_pools(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return value or None  # an empty VIDQ_POOLS means every pool, as unset does

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("gpus", mode="after")
    @classmethod
    def _gpu_entries(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if not value:
            return None
        if "all" in value:
            if len(value) > 1:
                raise ValueError("`all` cannot be combined with GPU indices")
            return value
        for entry in value:
            if not _GPU_ENTRY.fullmatch(entry):
                raise ValueError(f"expected `all` or GPU indices (0,1,3) or UUIDs, got {entry!r}")
        if len(set(value)) != len(value):
            raise ValueError("a GPU is listed twice")
        return value

    @field_validator("engines", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        engines: dict[str, str] = {}
        for item in _split(value):
            pool, sep, engine = item.partition("=")
            if not sep or not pool.strip() or not engine.strip():
                raise ValueError(f"expected pool=engine, got {item!r}")
            engines[pool.strip()] = engine.strip()
        return engines

    def engine_for(self, pool: str) -> str:
        """The engine that runs the jobs of ``pool``."""
        return self.engines.get(pool, self.engine)


class PreviewSettings(_Group):
    """The preview engine (CPU, no weights)."""

    model_config = SettingsConfigDict(env_prefix="VIDQ_PREVIEW_")

    step_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Pause per step of the preview engine, so that tests and demos can "
        "watch a job in progress.",
    )
    fail_prompt: str | None = Field(
        default=None,
        min_length=1,
        description="Requests whose prompt contains this text fail in the preview engine "
        "(error type `PreviewFailure`, no retries), so that a client's handling of a failed "
        "request can be tried against a local server; unset: none fail.",
    )


class WanSettings(_Group):
    """The wan engine (Wan 2.2 through diffusers)."""

    model_config = SettingsConfigDict(env_prefix="VIDQ_WAN_")

    models_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("models_dir", "VIDQ_MODELS_DIR"),
        description="Folder of local model weights (diffusers layout, see "
        "`vidq models check`); required by pools that use the wan engine.",
    )
    base: Literal["a14b", "ti2v-5b"] = Field(
        default="a14b",
        description="Wan 2.2 model: `a14b` (T2V/I2V-A14B with Lightning LoRAs) or `ti2v-5b`.",
    )
    device: str = Field(default="auto", description="Device: auto, cuda, cuda:N or cpu.")
    dtype: str = Field(
        default="bfloat16", description="Weights dtype: bfloat16, float16 or float32."
    )
    attention: str = Field(
        default="native", description="Attention backend: native, flash or sage."
    )
    vae_tiling: bool = Field(
        default=False, description="Decode the VAE in tiles (lower peak memory)."
    )
    preview_decoder: Path | None = Field(
        default=None,
        description="Weights of a TAEHV tiny VAE decoder for sharper live previews: "
        "`taew2_1.safetensors` for the A14B models, `taew2_2.safetensors` for TI2V-5B "
        "(github.com/madebyollin/taehv); unset: the latents' linear projection to RGB.",
    )
    offload: bool = Field(
        default=False, description="Model CPU offload, for GPUs too small to hold A14B."
    )


class LTX2Settings(_Group):
    """The ltx2 engine (LTX-2 video with sound through diffusers)."""

    model_config = SettingsConfigDict(env_prefix="VIDQ_LTX2_")

    models_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("models_dir", "VIDQ_MODELS_DIR"),
        description="Folder of local model weights (diffusers layout); the LTX-2 pipeline is "
        "read from its `VIDQ_LTX2_WEIGHTS` folder unless a model's `weights` option names "
        "another.",
    )
    weights: str = Field(
        default="LTX-2",
        description="The LTX-2 pipeline's folder under the models dir (diffusers layout), "
        "loaded when the engine starts; models whose `weights` option names another folder "
        "load it at their first job.",
    )
    device: str = Field(default="auto", description="Device: auto, cuda, cuda:N or cpu.")
    dtype: str = Field(
        default="bfloat16", description="Weights dtype: bfloat16, float16 or float32."
    )
    vae_tiling: bool = Field(
        default=False, description="Decode the video VAE in tiles (lower peak memory)."
    )
    offload: bool = Field(
        default=False,
        description="Model CPU offload, for GPUs too small to hold LTX-2 and its Gemma 3 "
        "text encoder at once.",
    )


class ComfyUISettings(_Group):
    """The comfyui engine (workflows on ComfyUI servers)."""

    model_config = SettingsConfigDict(env_prefix="VIDQ_COMFYUI_")

    urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("http://127.0.0.1:8188",),
        validation_alias=AliasChoices("urls", "VIDQ_COMFYUI_URL"),
        description="ComfyUI server(s); a job goes to the reachable one with the shortest queue.",
    )
    workflows_dir: Path | None = Field(
        default=None,
        description="Folder of workflow templates (`<model id>.json` or `<kind>.json`) "
        "that replace the built-in ones.",
    )
    lora_dir: Path | None = Field(
        default=None,
        description="A folder the ComfyUI servers read LoRAs from (one of their `loras` "
        "model paths, e.g. a shared volume listed in `extra_model_paths.yaml`) that this "
        "worker can write: a request's LoRAs are placed there for its job, then removed. "
        "Unset: requests with `loras` fail on this engine.",
    )
    job_timeout: float = Field(
        default=3600.0, gt=0, description="Seconds one ComfyUI job may take."
    )
    http_timeout: float = Field(
        default=30.0, gt=0, description="Seconds one HTTP call to ComfyUI may take."
    )
    connect_wait: float = Field(
        default=60.0,
        ge=0,
        description="Seconds to wait for a ComfyUI server to answer; past it the job goes "
        "back to the queue without spending an attempt and the worker holds the engine down "
        "(probing it) until a server answers.",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list | tuple):
            return tuple(str(u).strip().rstrip("/") for u in value if str(u).strip())
        return value

    @field_validator("workflows_dir", "lora_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # The engine runs in a child process: hand it a path that does not depend on a cwd.
        return value.resolve() if value is not None else None


class RetentionSettings(_Group):
    """How long inputs, outputs and job rows are kept (the collector runs in workers and as
    `vidq gc`): durations in seconds."""

    input_ttl: float = Field(
        default=0.0,
        ge=0,
        description="Keep a request's input blobs this long after it "
        "finished; 0 deletes them once it finished (at the collector's next pass).",
    )
    output_ttl: float = Field(
        default=7 * 86400.0,
        ge=0,
        description="Keep a completed request's video this long "
        "(7 days); then its result answers 410 Gone and its status says `expired`.",
    )
    job_ttl: float = Field(
        default=30 * 86400.0,
        ge=0,
        description="Keep a finished request's row this long "
        "(30 days); then the request is unknown (404). Its counters stay in the metrics.",
    )
    upload_ttl: float = Field(
        default=7 * 86400.0,
        ge=0,
        description="Keep a file uploaded with fal's upload routes "
        "this long (7 days) unless its uploader asked for another expiry "
        "(`X-Fal-Object-Lifecycle-Preference`); requests copy an upload into their inputs "
        "when submitted.",
    )
    gc_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between two collector passes of a worker "
        "(one worker of the fleet collects at a time).",
    )
    gc_batch: int = Field(default=100, ge=1, description="Jobs the collector expires per batch.")
    gc_lease: float = Field(
        default=120.0,
        gt=0,
        description="The collector's fleet-wide lease, renewed between batches: how long a "
        "collector that died blocks the next one.",
    )


class LimitsSettings(_Group):
    """What one request may ask for: body and input sizes, URL fetches, webhooks; the
    limits new tokens get; how long a job may wait for a worker."""

    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body (413 above)."
    )
    max_fields_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="A request's JSON apart from its media fields (prompt, options, unknown "
        "fields: what is stored with the job); 413 above.",
    )
    decode_threads: int = Field(
        default=2,
        ge=1,
        description="Images the API decodes at once (their pixels must fit in memory "
        "together); other submits wait up to 30 s, then get 503.",
    )
    max_input_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest decoded input (data URI or fetched URL), per input (413 above).",
    )
    max_loras: int = Field(
        default=3,
        ge=0,
        description="LoRAs one request may name (`loras`, Wan text- and image-to-video; 422 "
        "above; the schema allows 16 at most).",
    )
    max_lora_bytes: int = Field(
        default=2 * 1024**3,
        ge=1024,
        description="Largest LoRA file a worker fetches (a rank-64 Wan 2.2 A14B LoRA is "
        "about 0.6 GB in bf16, rank 128 about 1.2 GB); the job fails above it.",
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest image input, width x height (422 above)."
    )
    max_audio_seconds: float = Field(
        default=60.0, gt=0, description="Longest audio input, sound-to-video (422 above)."
    )
    max_video_seconds: float = Field(
        default=30.0, gt=0, description="Longest video input, Foley (422 above)."
    )
    max_uploads_per_user: int = Field(
        default=500,
        ge=1,
        description="Files a user may keep uploaded with fal's upload routes at once (stored "
        "or in progress, until they expire); 429 above.",
    )
    max_upload_bytes_per_user: int = Field(
        default=4 * 1024 * 1024 * 1024,
        ge=1024,
        description="Bytes a user may keep uploaded at once, the parts of uploads in "
        "progress included; 429 above.",
    )
    max_tokens_per_user: int = Field(
        default=10,
        ge=1,
        description="Live API tokens (neither revoked nor expired) a user may hold when "
        "they create one themselves (`POST /tokens`, the web app's API keys page): a create "
        "past it is 409. All their live tokens count; `vidq token create` is not refused.",
    )
    max_workers_per_token: int = Field(
        default=64,
        ge=1,
        description="Worker names one worker token may keep alive on `/admin/workers` (a "
        "GPU slot is one); a claim under a new name past it is 429.",
    )
    run_timeout: float = Field(
        default=300.0,
        gt=0,
        description="How long the synchronous fal route (`fal.run`: POST /run/...) waits for "
        "its request; past it, 504 naming the request id (the request goes on: poll it).",
    )
    fetch_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Deadline of fetching a submit's input URLs, all of it: the wait for a "
        "fetch slot, connect, headers, redirects, body (422 past it).",
    )
    fetch_concurrency: int = Field(
        default=16, ge=1, description="Submits fetching input URLs at once, per API process."
    )
    fetch_per_user: int = Field(
        default=4,
        ge=1,
        description="Submits of one user fetching input URLs at once, per API process; "
        "more wait, within `fetch_timeout`.",
    )
    media_concurrency: int = Field(
        default=4,
        ge=1,
        description="Submits with media inputs being decoded, stored and queued at once, "
        "per API process (their images go through the `decode_threads` pool).",
    )
    fetch_allow_http: bool = Field(
        default=False,
        description="Accept http:// input URLs (local testing only; https otherwise).",
    )
    fetch_allow_networks: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        default=(),
        description="Non-global networks that input URLs may reach, e.g. "
        "`127.0.0.1/32` (local testing only; never in production).",
    )
    webhook_allow_loopback_http: bool = Field(
        default=False,
        description="TESTS ONLY: accept http:// webhook targets on 127.0.0.1, ::1 and localhost.",
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="Deliveries of a webhook before giving up."
    )
    webhook_retry_backoff_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="Seconds before a failed webhook delivery is tried again; doubles after "
        "each failed try, up to 600 s.",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Deadline of one webhook delivery attempt: resolve, connect, send, "
        "the answer's headers.",
    )
    webhook_concurrency: int = Field(
        default=32, ge=1, description="Webhook deliveries in flight at once, per API process."
    )
    webhook_per_host: int = Field(
        default=4, ge=1, description="Webhook deliveries in flight to one receiver (host and port)."
    )
    webhook_per_user: int = Field(
        default=8, ge=1, description="Webhook deliveries in flight for one user's requests."
    )

    default_max_queued: int | None = Field(
        default=None,
        ge=1,
        description="Requests a new token's user may have queued at once (429 above); "
        "unset: unlimited. `vidq token create --max-queued` overrides it.",
    )
    default_max_running: int | None = Field(
        default=None,
        ge=1,
        description="Requests of a new token's user running at once; the rest wait while "
        "other users' jobs go first. Unset: unlimited.",
    )
    default_rate_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Submits a new token may make in any 60 s (429 above); unset: unlimited.",
    )
    default_daily_video_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Seconds of video a new token may request per UTC day (429 above); "
        "unset: unlimited.",
    )
    default_daily_gpu_seconds: int | None = Field(
        default=None,
        ge=1,
        description="GPU-seconds a new token's requests may use per UTC day: once its "
        "finished and running requests of the day have used them, submits get 429 until "
        "00:00 UTC (running requests finish). Unset: unlimited.",
    )
    max_queue_seconds: float | None = Field(
        default=None,
        gt=0,
        description="A request not started this long after its submit ends FAILED (`not "
        "started within N s`), so a pool without workers holds no job forever; unset: off. "
        "Applies to requests submitted while it is set.",
    )

    @field_validator("fetch_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        value = _split(value)
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(n, strict=False) for n in value)
        return value


class _OwnFieldsEnv(EnvSettingsSource):
    """The environment source of ``Settings`` itself: its plain fields only (``data_dir``);
    each group reads its own variables, so ``VIDQ_SERVER`` and the like mean nothing."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in GROUPS:
            return None, field_name, False
        return super().get_field_value(field, field_name)


class Settings(BaseSettings):
    """Every knob of vidq, in groups. Build it with ``Settings.load`` (CLI flags on top of
    the environment) or ``Settings()`` (the environment alone)."""

    model_config = SettingsConfigDict(env_prefix="VIDQ_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("./var"),
        description="Data folder (relative to the working directory): the SQLite job "
        "store, local blobs and the generated secret key live here unless configured "
        "elsewhere.",
    )
    models_file: Path | None = Field(
        default=None,
        description="The models file (TOML, docs/models.md): the model ids served, their "
        "pools, engines, defaults and fal aliases. Unset: the shipped one (the 16 Wan 2.2 and "
        "HunyuanVideo-Foley ids, and LTX-2's opt-in two). Checked at start; `vidq models check "
        "FILE` checks one without starting anything.",
    )
    log_level: str = Field(
        default="INFO",
        description="Log level of every vidq process: DEBUG, INFO, WARNING or ERROR.",
    )
    log_format: Literal["human", "json"] = Field(
        default="human",
        description="Log lines of every vidq process (engine children included): `human` "
        "or `json` (one object per line: time, level, logger, message, context).",
    )
    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    store: StoreSettings = Field(default_factory=lambda: StoreSettings())
    storage: StorageSettings = Field(default_factory=lambda: StorageSettings())
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    preview: PreviewSettings = Field(default_factory=lambda: PreviewSettings())
    wan: WanSettings = Field(default_factory=lambda: WanSettings())
    ltx2: LTX2Settings = Field(default_factory=lambda: LTX2Settings())
    comfyui: ComfyUISettings = Field(default_factory=lambda: ComfyUISettings())
    retention: RetentionSettings = Field(default_factory=lambda: RetentionSettings())
    limits: LimitsSettings = Field(default_factory=lambda: LimitsSettings())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _OwnFieldsEnv(settings_cls)

    @classmethod
    def load(cls, *, data_dir: Path | None = None, **groups: Mapping[str, Any]) -> Settings:
        """The environment, with CLI flag values on top; a flag left at None is not given.
        ``Settings.load(data_dir=..., server={"host": ..., "port": None})``."""
        given: dict[str, Any] = {} if data_dir is None else {"data_dir": data_dir}
        for name, values in groups.items():
            group = GROUPS.get(name)
            if group is None:
                raise TypeError(f"unknown settings group {name!r}; known: {', '.join(GROUPS)}")
            flags = {k: v for k, v in values.items() if v is not None}
            if flags:
                given[name] = group(**flags)  # the group's other fields still come from env
        return cls(**given)

    # Derived defaults are resolved here, and only here.
    def resolved_database_url(self) -> str:
        """``store.database_url``, else the SQLite file in the data dir."""
        return self.store.database_url or f"sqlite:///{self.data_dir.resolve() / 'vidq.db'}"

    def resolved_storage_url(self) -> str:
        """``storage.storage_url``, else the blobs folder in the data dir."""
        return self.storage.storage_url or f"file://{self.data_dir.resolve() / 'blobs'}"

    def resolved_lora_cache_dir(self) -> Path:
        """``worker.lora_cache_dir``, else ``lora-cache`` in the data dir (absolute)."""
        return (self.worker.lora_cache_dir or self.data_dir / "lora-cache").resolve()

    def engine_settings(self) -> dict[str, BaseModel]:
        """Engine name -> the settings group its engine is built with."""
        return {
            "preview": self.preview,
            "wan": self.wan,
            "ltx2": self.ltx2,
            "comfyui": self.comfyui,
        }


# Group name -> its class, in the order of the fields of Settings.
GROUPS: dict[str, type[_Group]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, _Group)
}


def env_name(model: type[BaseSettings], name: str) -> str:
    """The environment variable of field ``name`` of ``model`` (a group or Settings)."""
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[-1]).upper()
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()
