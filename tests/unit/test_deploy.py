"""The deploy files run only commands the real CLI accepts.

No Docker engine or Kubernetes cluster runs in CI, so the images are never built here;
`make lint` checks the files' shape (hadolint, the Compose and Kubernetes schemas) and this
module checks what they run: every `vidq` command line in the Dockerfiles (ENTRYPOINT +
CMD), in deploy/compose.yaml and in the Kubernetes manifests is parsed by the `vidq` CLI
itself (the command typer builds: options exist, values convert), and every `VIDQ_*`
variable they set is one that vidq reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperGroup

from tests.support.processes import ROOT
from vidq.cli.main import app
from vidq.config_doc import setting_infos

DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.gpu"]
K8S = sorted((DEPLOY / "k8s").rglob("*.yaml"))
CLI = typer.main.get_command(app)


def parse(argv: list[str]) -> Any:
    """Parse ``argv`` (``["vidq", ...]``) as the CLI would, down to the leaf command, without
    running it: an unknown command or option, or a value that does not convert, raises
    ``typer.TyperException`` (typer's UsageError and BadParameter derive from it)."""
    assert argv and argv[0] == "vidq", f"not a vidq command: {argv}"
    command: Any = CLI
    context = CLI.make_context("vidq", [], resilient_parsing=True)
    args = argv[1:]
    while isinstance(command, TyperGroup):
        assert args, f"{argv}: a command is missing after {command.name}"
        name, args = args[0], args[1:]
        command = command.get_command(context, name)
        assert command is not None, f"{argv}: no command {name!r}"
        if isinstance(command, TyperGroup):
            context = command.make_context(name, [], parent=context, resilient_parsing=True)
    return command.make_context(command.name or "", list(args), parent=context)


def instructions(path: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            yield word.upper(), rest.strip()


def image_command(path: Path) -> list[str]:
    """ENTRYPOINT + CMD of the final stage, both in exec (JSON) form."""
    entrypoint: list[str] = []
    cmd: list[str] = []
    for word, rest in instructions(path):
        if word == "FROM":
            entrypoint, cmd = [], []
        elif word in ("ENTRYPOINT", "CMD"):
            assert rest.startswith("["), f"{path.name}: {word} must be in exec form"
            value = json.loads(rest)
            if word == "ENTRYPOINT":
                entrypoint = value
            else:
                cmd = value
    return entrypoint + cmd


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def compose_commands() -> Iterator[tuple[str, list[str]]]:
    """(service, argv) of every Compose service that runs a vidq image."""
    for name, service in compose()["services"].items():
        if str(service.get("image", "")).startswith("vidq"):
            assert "entrypoint" not in service, f"{name}: keep the image's ENTRYPOINT (vidq)"
            yield name, ["vidq", *service["command"]]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in K8S:
        for doc in documents(path):
            spec = doc.get("spec", {}).get("template", {}).get("spec")
            if spec:
                yield f"{path.name}:{doc['metadata']['name']}", spec


def k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, spec in pod_specs():
        for container in spec["containers"]:
            if "/vidq" in container["image"]:
                yield f"{where}/{container['name']}", container


def k8s_commands() -> Iterator[tuple[str, list[str]]]:
    for where, container in k8s_containers():
        assert "command" not in container, f"{where}: keep the image's ENTRYPOINT (vidq)"
        yield where, ["vidq", *container["args"]]


def all_commands() -> list[Any]:
    found = [(p.name, image_command(p)) for p in DOCKERFILES]
    every = [*found, *compose_commands(), *k8s_commands()]
    return [pytest.param(where, argv, id=where) for where, argv in every]


@pytest.mark.parametrize(("where", "argv"), all_commands())
def test_every_deployed_command_parses_in_the_real_cli(where: str, argv: list[str]) -> None:
    try:
        parse(argv)
    except typer.TyperException as exc:
        pytest.fail(f"{where}: `{' '.join(argv)}` is refused by the CLI: {exc}")


def test_the_parser_refuses_what_the_cli_refuses() -> None:
    serve = parse(["vidq", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"])
    assert serve.params["port"] == 8000
    assert parse(["vidq", "db", "upgrade"]).command.name == "upgrade"
    with pytest.raises(typer.TyperException, match="No such option"):
        parse(["vidq", "serve", "--no-such-flag"])
    with pytest.raises(typer.BadParameter):
        parse(["vidq", "serve", "--port", "eighty"])
    with pytest.raises(typer.TyperException, match="No such option"):
        parse(["vidq", "db", "upgrade", "--port", "1"])
    with pytest.raises(AssertionError):
        parse(["vidq", "no-such-command"])


def test_images_run_the_api_and_the_worker() -> None:
    api, gpu = (image_command(p) for p in DOCKERFILES)
    assert api[:2] == ["vidq", "serve"]
    assert gpu[:2] == ["vidq", "worker"]


def known_variables() -> set[str]:
    """Every VIDQ_* variable vidq reads: the settings, and the CLI options' envvars."""
    names = {info.env for info in setting_infos()}
    stack: list[Any] = [CLI]
    while stack:
        command = stack.pop()
        if isinstance(command, TyperGroup):
            stack.extend(command.commands.values())
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def compose_variables() -> Iterator[tuple[str, str]]:
    for var in compose()["x-vidq-env"]:
        yield "compose.yaml:x-vidq-env", var
    for name, service in compose()["services"].items():
        for var in service.get("environment", {}):
            yield f"compose.yaml:{name}", var


def k8s_variables() -> Iterator[tuple[str, str]]:
    for where, container in k8s_containers():
        for env in container.get("env", []):
            yield where, env["name"]
    for path in K8S:
        for doc in documents(path):
            if doc["kind"] == "ConfigMap":
                yield from ((f"{path.name}:{doc['metadata']['name']}", v) for v in doc["data"])


def dockerfile_variables() -> Iterator[tuple[str, str]]:
    for path in DOCKERFILES:
        for word, rest in instructions(path):
            if word == "ENV":
                yield from ((path.name, var) for var in re.findall(r"(\w+)=", rest))


def test_every_vidq_variable_set_is_read_by_vidq() -> None:
    known = known_variables()
    unknown = sorted(
        f"{where}: {var}"
        for where, var in [*compose_variables(), *k8s_variables(), *dockerfile_variables()]
        if var.startswith("VIDQ_") and var not in known
    )
    assert not unknown, f"variables vidq does not read: {unknown}"


def test_gpu_worker_pods_are_ready_on_their_metrics_port() -> None:
    """The readiness probe asks /health on the port the worker serves /metrics on, and
    each pod holds one GPU."""
    for where, container in k8s_containers():
        args = container["args"]
        if args[0] != "worker":
            continue
        port = int(args[args.index("--metrics-port") + 1])
        named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        probe = container["readinessProbe"]["httpGet"]
        assert named.get(probe["port"], probe["port"]) == port, where
        assert probe["path"] == "/health", where
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1, where


def test_keda_objects_are_checked_against_a_schema() -> None:
    """kubernetes-validate only warns on kinds it has no schema for: every KEDA object must
    sit in a keda-<kind>.yaml file, which `make lint` checks against schemas/keda-<kind>.json,
    and must scale a Deployment of these manifests."""
    deployments = {
        doc["metadata"]["name"]
        for path in K8S
        for doc in documents(path)
        if doc["kind"] == "Deployment"
    }
    for path in K8S:
        for doc in documents(path):
            if not doc["apiVersion"].startswith("keda.sh/"):
                continue
            kind = doc["kind"].lower()
            assert path.name == f"keda-{kind}.yaml", f"{path}: name it keda-{kind}.yaml"
            assert (DEPLOY / "k8s" / "schemas" / f"keda-{kind}.json").exists()
            if kind == "scaledobject":
                assert doc["spec"]["scaleTargetRef"]["name"] in deployments, path
                assert doc["spec"]["minReplicaCount"] == 0, f"{path}: an idle fleet scales to 0"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_only_from_a_lock(path: Path) -> None:
    """Every `pip install` of an image takes its packages from a lock in requirements/ (the
    file copied into the image): pip itself at the lock's pin, the lock with `-r`, and vidq
    with `--no-deps`. Nothing resolves afresh at build time."""
    locks, installs = set(), []
    for word, rest in instructions(path):
        if word == "COPY" and rest.startswith("requirements/"):
            locks.add(rest.split()[0])
        if word == "RUN":
            installs += [c.strip() for c in rest.split("&&") if " pip install " in c]
    assert locks, f"{path.name} copies no lock"
    for lock in locks:
        assert (ROOT / lock).is_file(), f"{path.name}: {lock} does not exist"
    for command in installs:
        if " -r " in command:
            assert command.split(" -r ")[1].split()[0] in locks, command
        elif "--no-deps" in command:
            assert command.endswith(" ."), command
        else:
            assert "grep -m1 '^pip==' requirements/" in command, f"unpinned: {command}"
