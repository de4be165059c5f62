"""Checks of the deployment files: docker-compose.yml, Dockerfile, infra/k8s and LICENSE."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any, NoReturn, cast
from urllib.parse import urlsplit

import aio_pika
import jsonschema
import pytest
import yaml
from aio_pika.abc import AbstractChannel, ExchangeType

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LICENSE_FILE = ROOT / "LICENSE"
K8S_DIR = ROOT / "infra" / "k8s"

HANDLERS = ("ingress", "extract", "webhooks", "object-drop", "llm")

# sha256 of https://www.gnu.org/licenses/agpl-3.0.txt
AGPL_3_0_SHA256 = "0d96a4ff68ad6d4b6f1f30f713b18d5184912ba8dd389f86aa7710db079abcb0"

# The exchange MinIO publishes bucket notifications to; pdfrelay declares it with these flags.
S3_EVENTS_EXCHANGE = "pdfrelay.s3-events"

# The MinIO AMQP notification target's settings (internal/event/target/amqp.go). MinIO silently
# ignores a misspelt variable, so every MINIO_NOTIFY_AMQP_* in the compose file must be one.
MINIO_AMQP_KEYS = frozenset(
    {
        "ENABLE",
        "URL",
        "EXCHANGE",
        "ROUTING_KEY",
        "EXCHANGE_TYPE",
        "DELIVERY_MODE",
        "MANDATORY",
        "IMMEDIATE",
        "DURABLE",
        "INTERNAL",
        "NO_WAIT",
        "AUTO_DELETED",
        "ARGUMENTS",
        "PUBLISHING_CONFIRMS",
        "QUEUE_DIR",
        "QUEUE_LIMIT",
        "COMMENT",
    }
)
MINIO_TARGET_ID = "PRIMARY"
RELEASE_TAG = r"RELEASE\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z"

# The oldest Kubernetes minor the manifests must be valid for.
K8S_VERSION = "1.30"
KEDA_QUEUES = {"extract": "pdfrelay.extract", "webhooks": "pdfrelay.webhooks"}

TEST_WEBHOOK_SECRET = "whsec_dGVzdC1vbmx5LXNlY3JldC1ub3QtZm9yLXVzZQ=="


def _require(what: str, reason: str) -> NoReturn:
    """Skip on a developer machine, fail in CI: there the tool must have been installed."""
    message = f"{what} is not installed: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --- docker-compose.yml ---------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Resolve `$$`, `${VAR}`, `${VAR:-default}` and `${VAR:?error}` as Compose does."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        current = env.get(name)
        missing = not current if op.startswith(":") else current is None
        if missing and op.endswith("-"):
            return arg
        if missing and op.endswith("?"):
            raise ValueError(f"{name}: {arg}")
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(item, env) for key, item in node.items()}
    return node


@cache
def raw_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@cache
def compose() -> dict[str, Any]:
    """The compose file as `docker compose` sees it with only the required variable set."""
    resolved = _interpolate_tree(raw_compose(), {"PDFRELAY_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET})
    assert isinstance(resolved, dict)
    return resolved


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    svc = services[name]
    assert isinstance(svc, dict)
    return svc


def service_env(name: str) -> dict[str, str]:
    env = service(name).get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict)
    return {str(key): str(value) for key, value in env.items()}


def _compose_command() -> list[str] | None:
    if exe := shutil.which("docker-compose"):
        return [exe]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def _run_compose_config(env_overrides: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        _require("docker-compose", "apt-get install docker-compose (the Makefile does)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PDFRELAY_", "COMPOSE_"))}
    env.update(env_overrides)
    return subprocess.run(
        [*command, "--file", str(COMPOSE_FILE), "--project-directory", str(ROOT), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_file_validates() -> None:
    result = _run_compose_config({"PDFRELAY_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET})
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_webhook_secret() -> None:
    result = _run_compose_config({})
    assert result.returncode != 0
    assert "PDFRELAY_WEBHOOK_SECRET" in result.stderr


def test_webhook_secret_goes_to_the_webhooks_handler_only() -> None:
    raw = raw_compose()["services"]["webhooks"]["environment"]["PDFRELAY_WEBHOOK_SECRET"]
    assert raw.startswith("${PDFRELAY_WEBHOOK_SECRET:?"), "the signing secret must have no default"
    for name in compose()["services"]:
        if name != "webhooks":
            assert "PDFRELAY_WEBHOOK_SECRET" not in service_env(name), name


def test_every_image_is_pinned() -> None:
    for name, svc in compose()["services"].items():
        image = svc.get("image")
        if image is None:
            assert "build" in svc, f"{name} has neither image nor build"
            continue
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image!r} has no tag"
        assert "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
    assert service("rabbitmq")["image"] == "rabbitmq:3.13-management"
    assert re.fullmatch(rf"(quay\.io/)?minio/minio:{RELEASE_TAG}", service("minio")["image"])
    assert re.fullmatch(rf"(quay\.io/)?minio/mc:{RELEASE_TAG}", service("minio-init")["image"])


def minio_amqp_settings() -> dict[str, str]:
    """MinIO's AMQP target settings in the compose file, by key without prefix and suffix."""
    env = service_env("minio")
    suffix = f"_{MINIO_TARGET_ID}"
    for key in env:
        if key.startswith("MINIO_NOTIFY_AMQP_"):
            assert key.endswith(suffix), f"{key}: every setting of the target needs {suffix}"
    return {
        key.removeprefix("MINIO_NOTIFY_AMQP_").removesuffix(suffix): value
        for key, value in env.items()
        if key.startswith("MINIO_NOTIFY_AMQP_")
    }


def test_minio_notifies_rabbitmq_durably() -> None:
    amqp = minio_amqp_settings()
    assert set(amqp) <= MINIO_AMQP_KEYS, f"unknown MinIO settings: {set(amqp) - MINIO_AMQP_KEYS}"
    # MinIO compares its boolean settings with the literal "on".
    assert amqp | {"URL": "", "ROUTING_KEY": "", "QUEUE_DIR": "", "QUEUE_LIMIT": ""} == {
        "ENABLE": "on",
        "URL": "",
        "EXCHANGE": S3_EVENTS_EXCHANGE,
        "EXCHANGE_TYPE": "fanout",
        "ROUTING_KEY": "",
        "DURABLE": "on",
        "AUTO_DELETED": "off",
        "INTERNAL": "off",
        "NO_WAIT": "off",
        "MANDATORY": "off",
        "IMMEDIATE": "off",
        "DELIVERY_MODE": "2",
        "PUBLISHING_CONFIRMS": "on",
        "QUEUE_DIR": "",
        "QUEUE_LIMIT": "",
    }
    assert amqp["ROUTING_KEY"], "set a routing key (fanout ignores it, readers do not)"
    assert int(amqp["QUEUE_LIMIT"]) > 0

    url = urlsplit(amqp["URL"])
    rabbit = service_env("rabbitmq")
    assert url.scheme == "amqp"
    assert url.hostname == "rabbitmq"
    assert (url.username, url.password) == (
        rabbit["RABBITMQ_DEFAULT_USER"],
        rabbit["RABBITMQ_DEFAULT_PASS"],
    )
    assert service("minio")["depends_on"]["rabbitmq"]["condition"] == "service_healthy"

    # The spool must survive a container restart, or events are lost exactly when it matters.
    queue_dir = amqp["QUEUE_DIR"]
    assert queue_dir.startswith("/")
    named_volumes = set(compose().get("volumes") or {})
    mounts = [str(volume).split(":") for volume in service("minio")["volumes"]]
    assert any(
        source in named_volumes and queue_dir.startswith(target) for source, target, *_ in mounts
    ), f"{queue_dir} is not on a named volume"


class _RecordingQueue:
    async def bind(self, *args: Any, **kwargs: Any) -> None:
        return None


class _RecordingChannel:
    """Stands in for an aio-pika channel and records the exchanges `declare` asks for."""

    def __init__(self) -> None:
        self.exchanges: dict[str, dict[str, Any]] = {}

    async def declare_exchange(self, *args: Any, **kwargs: Any) -> None:
        # Bound to aio-pika's own signature, so defaults count as what is sent to the broker.
        bound = inspect.signature(aio_pika.Channel.declare_exchange).bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.exchanges[bound.arguments["name"]] = dict(bound.arguments)

    async def declare_queue(self, *args: Any, **kwargs: Any) -> _RecordingQueue:
        return _RecordingQueue()


async def test_pdfrelay_declares_the_s3_events_exchange_exactly_as_minio_does() -> None:
    """RabbitMQ refuses a second declaration with other flags: both sides must agree."""
    from shared.adapters.topology import Topology, declare
    from shared.settings import Settings

    topology = Topology(
        ns=Settings.model_fields["namespace"].default, delivery_limit=1, max_queue_length=1
    )
    channel = _RecordingChannel()
    await declare(cast(AbstractChannel, channel), topology)

    amqp = minio_amqp_settings()
    assert topology.s3_events == amqp["EXCHANGE"]
    declared = channel.exchanges[topology.s3_events]
    assert ExchangeType(declared["type"]).value == amqp["EXCHANGE_TYPE"]
    assert declared["durable"] is (amqp["DURABLE"] == "on")
    assert declared["auto_delete"] is (amqp["AUTO_DELETED"] == "on")
    assert declared["internal"] is (amqp["INTERNAL"] == "on")
    assert not declared["arguments"], "MinIO declares the exchange without arguments"
    # The queues KEDA watches are the ones pdfrelay consumes from.
    assert {"extract": topology.extract, "webhooks": topology.webhooks} == KEDA_QUEUES


def test_minio_init_creates_bucket_and_notification_rule() -> None:
    init = service("minio-init")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert init["entrypoint"][0] == "/bin/sh"
    script = "\n".join(init["command"])
    # What the shell in the container makes of it, with the container's environment.
    init_env = service_env("minio-init")
    bucket = init_env["PDFRELAY_S3_BUCKET"]
    lines = [shlex.split(line) for line in script.splitlines() if line.strip()]
    expanded = [[interpolate(word, init_env) for word in line] for line in lines]

    mb = [line for line in expanded if line[:2] == ["mc", "mb"]]
    assert mb, "minio-init does not create the bucket"
    assert "--ignore-existing" in mb[0] or "-p" in mb[0], "mc mb must be idempotent"
    assert mb[0][-1] == f"local/{bucket}"

    add = [line for line in expanded if line[:3] == ["mc", "event", "add"]]
    assert add, "minio-init does not add the notification rule"
    words = add[0]
    assert "--ignore-existing" in words or "-p" in words, "mc event add must be idempotent"
    assert f"local/{bucket}" in words
    assert f"arn:minio:sqs::{MINIO_TARGET_ID}:amqp" in words
    assert words[words.index("--event") + 1] == "put"
    assert words[words.index("--prefix") + 1] == "inbox/"


def test_rabbitmq_service() -> None:
    rabbit = service("rabbitmq")
    assert rabbit.get("healthcheck", {}).get("test"), "rabbitmq needs a healthcheck"
    assert rabbit.get("hostname"), "the node name (and its data) follows the host name"
    assert any(str(volume).endswith(":/var/lib/rabbitmq") for volume in rabbit["volumes"])


@pytest.mark.parametrize("handler", HANDLERS)
def test_compose_runs_each_handler_in_its_own_service(handler: str) -> None:
    svc = service(handler)
    assert svc["build"]["context"] == "."
    # The image's ENTRYPOINT is ["pdfrelay"], so this runs `pdfrelay run <handler>`.
    assert dockerfile_entrypoint() == ["pdfrelay"]
    assert svc["command"] == ["run", handler]
    assert svc["healthcheck"]["test"]

    conditions = {name: dep["condition"] for name, dep in svc["depends_on"].items()}
    assert conditions == {
        "rabbitmq": "service_healthy",
        "minio": "service_healthy",
        "minio-init": "service_completed_successfully",
    }

    env = service_env(handler)
    minio = service_env("minio")
    assert env["PDFRELAY_AMQP_URL"] == minio[f"MINIO_NOTIFY_AMQP_URL_{MINIO_TARGET_ID}"]
    assert urlsplit(env["PDFRELAY_S3_ENDPOINT"]).netloc == "minio:9000"
    assert env["PDFRELAY_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
    assert env["PDFRELAY_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert env["PDFRELAY_S3_BUCKET"] == service_env("minio-init")["PDFRELAY_S3_BUCKET"]


def test_compose_ingress_serves_http() -> None:
    ingress = service("ingress")
    env = service_env("ingress")
    assert env["PDFRELAY_HTTP_HOST"] == "0.0.0.0"
    port = env["PDFRELAY_HTTP_PORT"]
    assert any(str(p).endswith(f":{port}") for p in ingress["ports"])
    probe = " ".join(ingress["healthcheck"]["test"])
    assert f":{port}/healthz" in probe


def test_compose_extract_scales_out() -> None:
    extract = service("extract")
    assert int(extract["deploy"]["replicas"]) >= 1
    # Replicas cannot share a container name or a host port.
    assert "container_name" not in extract
    assert "ports" not in extract
    assert int(service_env("extract")["PDFRELAY_EXTRACT_WORKERS"]) >= 1


# --- Dockerfile and .dockerignore --------------------------------------------------------------


@cache
def dockerfile_instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return tuple(instructions)


def final_stage() -> list[tuple[str, str]]:
    instructions = list(dockerfile_instructions())
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_entrypoint() -> list[str]:
    entrypoints = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    parsed = json.loads(entrypoints[-1])  # exec form: signals reach pdfrelay, not a shell
    assert isinstance(parsed, list)
    return [str(word) for word in parsed]


def test_dockerfile_bases_on_python_311_slim() -> None:
    instructions = dockerfile_instructions()
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
    bases = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    assert bases
    for base in bases:
        image = interpolate(base, args)
        assert image.startswith("python:3.11-slim"), image


IMAGE_SOURCES = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "handlers",
    "shared",
    "infra",
    "pdfrelay_client",  # the CLI (`pdfrelay`, the image's entry point) imports it
)


def test_dockerfile_installs_ocr_and_the_package() -> None:
    runs = " ".join(rest for keyword, rest in final_stage() if keyword == "RUN")
    installed = set(re.findall(r"tesseract-ocr[\w-]*", runs))
    assert {"tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-deu"} <= installed
    all_runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    assert any(re.search(r"\bpip install (\S+ )*\.( |$)", run) for run in all_runs)
    copied = " ".join(rest for keyword, rest in dockerfile_instructions() if keyword == "COPY")
    for needed in IMAGE_SOURCES:
        assert needed in copied, f"{needed} is not copied into the image"


def test_dockerfile_runs_as_an_unprivileged_user() -> None:
    users = [rest.split(":")[0] for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the image runs as root"
    assert users[-1] not in {"root", "0"}
    # Kubernetes' runAsNonRoot can only check a numeric user.
    assert users[-1].isdigit()
    assert dockerfile_entrypoint() == ["pdfrelay"]


def test_dockerignore_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for excluded in (".git", ".venv"):
        assert excluded in patterns
    for needed in IMAGE_SOURCES:
        matches = [p for p in patterns if not p.startswith("!") and fnmatch(needed, p)]
        assert not matches, f".dockerignore excludes {needed} ({matches})"


# --- LICENSE ---------------------------------------------------------------------------------


def test_license_is_the_agpl_3_0() -> None:
    text = LICENSE_FILE.read_bytes()
    assert text.lstrip().startswith(b"GNU AFFERO GENERAL PUBLIC LICENSE")
    assert hashlib.sha256(text).hexdigest() == AGPL_3_0_SHA256, "LICENSE is not the verbatim AGPL"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "AGPL-3.0-only"
    assert "LICENSE" in project.get("license-files", ["LICENSE"])


# --- infra/k8s -------------------------------------------------------------------------------

# Kubernetes' resource.Quantity (the schemas accept any string for it).
_QUANTITY = r"(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?"
_DNS_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": _DNS_NAME, "maxLength": 253},
        "namespace": {"type": "string", "pattern": _DNS_NAME, "maxLength": 63},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
_NUMBER_STRING = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
_BOOL_STRING = {"type": "string", "enum": ["true", "false"]}

# The parameters of KEDA's `rabbitmq` scaler (keda.sh/docs/latest/scalers/rabbitmq-queue).
_RABBITMQ_TRIGGER_METADATA = {
    "type": "object",
    "required": ["queueName", "mode", "value"],
    "additionalProperties": False,
    "properties": {
        "host": {"type": "string"},
        "hostFromEnv": {"type": "string"},
        "protocol": {"enum": ["auto", "amqp", "http"]},
        "mode": {"enum": ["QueueLength", "MessageRate"]},
        "value": _NUMBER_STRING,
        "activationValue": _NUMBER_STRING,
        "queueName": {"type": "string", "minLength": 1},
        "vhostName": {"type": "string"},
        "useRegex": _BOOL_STRING,
        "excludeUnacknowledged": _BOOL_STRING,
        "pageSize": {"type": "string", "pattern": r"^\d+$"},
        "operation": {"enum": ["sum", "max", "avg"]},
        "timeout": {"type": "string", "pattern": r"^\d+$"},
        "unsafeSsl": _BOOL_STRING,
    },
}

# The fields of KEDA's CRDs (keda.sh/v1alpha1) that these manifests may use, closed against
# typos: a misspelt field in a custom resource is silently dropped by the API server.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "pattern": _DNS_NAME},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {**_INT32, "minimum": 1},
                "cooldownPeriod": _INT32,
                "initialCooldownPeriod": _INT32,
                "idleReplicaCount": _INT32,
                "minReplicaCount": _INT32,
                "maxReplicaCount": {**_INT32, "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "additionalProperties": False,
                    "properties": {
                        "failureThreshold": _INT32,
                        "replicas": _INT32,
                        "behavior": {"type": "string"},
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "scalingModifiers": {"type": "object"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "scaleUp": {"$ref": "#/$defs/scalingRules"},
                                        "scaleDown": {"$ref": "#/$defs/scalingRules"},
                                    },
                                },
                            },
                        },
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "useCachedMetrics": {"type": "boolean"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": _STRING_MAP,
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string"},
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                            },
                        },
                        "if": {"properties": {"type": {"const": "rabbitmq"}}},
                        "then": {"properties": {"metadata": _RABBITMQ_TRIGGER_METADATA}},
                    },
                },
            },
        },
    },
    "$defs": {
        "scalingRules": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "stabilizationWindowSeconds": {**_INT32, "maximum": 3600},
                "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
                "policies": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "value", "periodSeconds"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"enum": ["Pods", "Percent"]},
                            "value": {**_INT32, "minimum": 1},
                            "periodSeconds": {**_INT32, "minimum": 1, "maximum": 1800},
                        },
                    },
                },
            },
        }
    },
}

_SECRET_KEY_REF = {
    "type": "object",
    "required": ["parameter", "name", "key"],
    "additionalProperties": False,
    "properties": {
        "parameter": {"type": "string", "minLength": 1},
        "name": {"type": "string", "pattern": _DNS_NAME},
        "key": {"type": "string", "minLength": 1},
    },
}
TRIGGER_AUTHENTICATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {"type": "array", "minItems": 1, "items": _SECRET_KEY_REF},
                "configMapTargetRef": {"type": "array", "items": _SECRET_KEY_REF},
                "env": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name"],
                        "additionalProperties": False,
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": {"type": "string"},
                            "containerName": {"type": "string"},
                        },
                    },
                },
                "podIdentity": {"type": "object"},
                "hashiCorpVault": {"type": "object"},
                "azureKeyVault": {"type": "object"},
                "awsSecretManager": {"type": "object"},
                "gcpSecretManager": {"type": "object"},
                "boundServiceAccountToken": {"type": "array"},
            },
        },
    },
}
KEDA_SCHEMAS = {
    "ScaledObject": SCALED_OBJECT_SCHEMA,
    "TriggerAuthentication": TRIGGER_AUTHENTICATION_SCHEMA,
}


def _load_yaml_documents(path: Path) -> Iterator[dict[str, Any]]:
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if document is not None:
            assert isinstance(document, dict), f"{path.name}: a document is not a mapping"
            yield document


@cache
def kustomization() -> dict[str, Any]:
    (document,) = _load_yaml_documents(K8S_DIR / "kustomization.yaml")
    return document


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, resource) for every manifest in infra/k8s, examples included."""
    return tuple(
        (path.name, document)
        for path in sorted(K8S_DIR.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in _load_yaml_documents(path)
    )


def resources(kind: str) -> dict[str, dict[str, Any]]:
    found = {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}
    return found


def deployment(handler: str) -> dict[str, Any]:
    deployments = resources("Deployment")
    name = f"pdfrelay-{handler}"
    assert name in deployments, f"infra/k8s has no Deployment {name}"
    return deployments[name]


def container(handler: str) -> dict[str, Any]:
    containers = deployment(handler)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    found = containers[0]
    assert isinstance(found, dict)
    return found


def test_kustomization_lists_every_manifest() -> None:
    kust = kustomization()
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    listed = set(kust["resources"])
    on_disk = {
        path.name
        for path in K8S_DIR.glob("*.yaml")
        if path.name != "kustomization.yaml" and not path.name.endswith(".example.yaml")
    }
    assert listed == on_disk
    assert kust["namespace"] == "pdfrelay"


def test_builtin_resources_match_the_kubernetes_schemas() -> None:
    try:
        # Imported by name: the package has no type information.
        validator: Any = importlib.import_module("kubernetes_validate")
    except ImportError:
        _require("kubernetes-validate", "pip install kubernetes-validate (a test extra)")
    errors = []
    for file_name, doc in manifests():
        if doc["kind"] in KEDA_SCHEMAS:
            continue
        try:
            validator.validate(doc, K8S_VERSION, strict=True)
        except validator.SchemaNotFoundError as exc:
            errors.append(f"{file_name}: {exc.message}")
        except validator.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{file_name}: {doc['kind']}/{doc['metadata']['name']}: {path}: {exc}")
    assert not errors, "\n".join(errors)


def test_keda_resources_match_their_schemas() -> None:
    seen = set()
    for file_name, doc in manifests():
        schema = KEDA_SCHEMAS.get(doc["kind"])
        if doc["apiVersion"].startswith("keda.sh/"):
            assert schema is not None, f"{file_name}: no schema for {doc['kind']}"
        if schema is None:
            continue
        jsonschema.Draft202012Validator.check_schema(schema)
        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
        )
        assert not errors, f"{file_name}: " + "; ".join(
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
        )
        seen.add(doc["kind"])
    assert seen == set(KEDA_SCHEMAS)


def test_keda_schema_rejects_a_broken_scaled_object() -> None:
    """The hand-written schema is strict enough to catch the mistakes that matter."""
    good = resources("ScaledObject")["pdfrelay-extract"]
    validator = jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA)
    assert validator.is_valid(good)
    broken = json.loads(json.dumps(good))
    broken["spec"]["triggers"][0]["metadata"]["mode"] = "QueueLenght"
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(good))
    broken["spec"]["scaleTargetRef"]["nmae"] = broken["spec"]["scaleTargetRef"].pop("name")
    assert not validator.is_valid(broken)
    broken = json.loads(json.dumps(good))
    broken["spec"]["triggers"][0]["metadata"]["value"] = 4
    assert not validator.is_valid(broken)


@pytest.mark.parametrize("handler", HANDLERS)
def test_k8s_deploys_each_handler(handler: str) -> None:
    deploy = deployment(handler)
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()

    main = container(handler)
    assert [*main.get("command", dockerfile_entrypoint()), *main["args"]] == [
        "pdfrelay",
        "run",
        handler,
    ]
    assert main["image"] in {image["name"] for image in kustomization()["images"]}

    resources_ = main["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources_[bound]), f"{handler}: {bound}"
        for quantity in resources_[bound].values():
            assert re.fullmatch(_QUANTITY, str(quantity)), f"{handler}: {bound}: {quantity!r}"

    sources = main["envFrom"]
    config_maps = {s["configMapRef"]["name"] for s in sources if "configMapRef" in s}
    secrets = {s["secretRef"]["name"] for s in sources if "secretRef" in s}
    assert config_maps <= set(resources("ConfigMap")), "envFrom names an unknown ConfigMap"
    assert secrets <= set(resources("Secret")), "envFrom names a Secret not in secret.example"
    assert "pdfrelay-secrets" in secrets
    assert ("pdfrelay-webhook-secret" in secrets) == (handler == "webhooks")

    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    config = next(iter(resources("ConfigMap").values()))["data"]
    expected_probes = (
        {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        if handler == "ingress"
        else {"readinessProbe": "/healthz", "livenessProbe": "/healthz"}
    )
    port_setting = "PDFRELAY_HTTP_PORT" if handler == "ingress" else "PDFRELAY_METRICS_PORT"
    for probe_name, path in expected_probes.items():
        probe = main[probe_name]["httpGet"]
        assert probe["path"] == path
        assert ports[probe["port"]] == int(config[port_setting]), f"{handler}: {probe_name}"

    security = main["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_ingress_service_reaches_the_ingress_pods() -> None:
    services = resources("Service")
    assert "pdfrelay-ingress" in services
    svc = services["pdfrelay-ingress"]
    pod_labels = deployment("ingress")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port_names = {port["name"] for port in container("ingress")["ports"]}
    assert {port["targetPort"] for port in svc["spec"]["ports"]} <= port_names


@pytest.mark.parametrize(("handler", "queue"), sorted(KEDA_QUEUES.items()))
def test_keda_scales_handler_on_its_queue(handler: str, queue: str) -> None:
    scaled = [
        doc
        for doc in resources("ScaledObject").values()
        if doc["spec"]["scaleTargetRef"]["name"] == deployment(handler)["metadata"]["name"]
    ]
    assert len(scaled) == 1, f"{handler} needs exactly one ScaledObject"
    spec = scaled[0]["spec"]
    assert spec.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # The HPA that KEDA creates owns the replica count; a fixed one would fight it on apply.
    assert "replicas" not in deployment(handler)["spec"]

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["queueName"] == queue
    # Credentials come from a TriggerAuthentication, never inline in the trigger.
    assert "host" not in trigger["metadata"]
    auth = resources("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert refs["host"]["name"] == "pdfrelay-secrets"
    assert refs["host"]["key"] == "PDFRELAY_AMQP_URL"
    secret = resources("Secret")["pdfrelay-secrets"]
    assert "PDFRELAY_AMQP_URL" in secret["stringData"]
