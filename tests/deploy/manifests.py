"""Reading deploy/: the compose file as `docker-compose config` resolves it, the Kubernetes
manifests, and the names imageflow/settings.py reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "env.example"
K8S = DEPLOY / "k8s"
IMAGEFLOW_IMAGE = "imageflow:latest"
# Read by the containers' own commands (`--workers ${WEB_CONCURRENCY}`), not by settings.py.
COMMAND_VARIABLES = {"WEB_CONCURRENCY", "WORKER_CONCURRENCY"}


def docker_compose() -> str:
    # scripts/setup.sh installs Debian's docker-compose when it is missing; nothing is skipped.
    path = shutil.which("docker-compose")
    assert path, "docker-compose is not installed: run scripts/setup.sh (make setup)"
    return path


def compose_config(*, env_file: Path = ENV_EXAMPLE, quiet: bool = False, profiles: tuple[str, ...] = ("gpu",)
                   ) -> subprocess.CompletedProcess:
    args = [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE)]
    for profile in profiles:
        args += ["--profile", profile]
    args += ["config", "-q"] if quiet else ["config"]
    # An empty environment: only the env file feeds the ${...} values, as on a clean host.
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)


def resolved_compose() -> dict:
    result = compose_config()
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def imageflow_services(config: dict) -> dict[str, dict]:
    return {name: service for name, service in config["services"].items() if service.get("image") == IMAGEFLOW_IMAGE}


def k8s_documents(*, include_examples: bool = True) -> list[tuple[Path, dict]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        if not include_examples and path.name.startswith("keda-"):
            continue
        documents += [(path, document) for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


def k8s_kind(kind: str, name: str | None = None) -> list[dict]:
    return [document for _, document in k8s_documents()
            if document["kind"] == kind and (name is None or document["metadata"]["name"] == name)]


def k8s_environment() -> dict[str, str]:
    """What every ImageFlow pod gets: the ConfigMap and the (example) Secret, by envFrom."""
    (config_map,) = k8s_kind("ConfigMap", "imageflow")
    (secret,) = k8s_kind("Secret", "imageflow")
    return {**config_map["data"], **secret["stringData"]}


def pod_templates() -> dict[str, dict]:
    templates = {}
    for kind in ("Deployment", "Job"):
        for document in k8s_kind(kind):
            templates[document["metadata"]["name"]] = document["spec"]["template"]["spec"]
    return templates


def settings_names() -> set[str]:
    """Every environment variable imageflow/settings.py reads (`env.<type>("NAME", ...)`)."""
    source = (ROOT / "imageflow" / "settings.py").read_text()
    names = set(re.findall(r'env\.(?:str|bool|int|float|list)\(\s*"([A-Z][A-Z0-9_]*)"', source))
    assert len(names) > 50, "the pattern no longer finds the settings"
    return names


def command_text(service: dict) -> str:
    """A compose service's command as the container runs it (`config` keeps `$$`, compose's
    escape of a literal `$`)."""
    command = service.get("command") or []
    return (command if isinstance(command, str) else " ".join(command)).replace("$$", "$")
