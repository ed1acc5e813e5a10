"""Every variable the deployment files pass is a setting imageflow/settings.py reads (a misspelled
name would be silently ignored), and what they pass is what production requires: settings load
with IMAGEFLOW_ENV=production and refuse_unsafe_production finds nothing to refuse."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.deploy.manifests import (
    COMMAND_VARIABLES, ROOT, command_text, imageflow_services, k8s_environment, pod_templates, resolved_compose, settings_names,
)

REQUIRED_IN_PRODUCTION = {"IMAGEFLOW_ENV", "SECRET_KEY", "ALLOWED_HOSTS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                          "DATABASE_HOST", "DATABASE_PASSWORD", "REDIS_URL", "CELERY_BROKER_URL",
                          "CHANNEL_LAYER_REDIS_URL", "S3_ENDPOINT_URL", "ELASTICSEARCH_URL",
                          "ELASTICSEARCH_PLAIN_JSON", "METRICS_TOKEN"}


def load_settings(environment: dict[str, str]) -> subprocess.CompletedProcess:
    """Settings in a fresh interpreter with exactly this environment (nothing inherited)."""
    code = ("import json; from django.conf import settings; "
            "print(json.dumps({'env': settings.ENVIRONMENT, 'debug': settings.DEBUG, "
            "'plain_json': settings.ELASTICSEARCH_PLAIN_JSON, 'hosts': settings.ALLOWED_HOSTS, "
            "'log_format': settings.LOG_FORMAT, 'metrics_token': bool(settings.METRICS_TOKEN)}))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "imageflow.settings", **environment})


def compose_environments() -> dict[str, dict[str, str]]:
    return {name: {key: str(value) for key, value in service["environment"].items()}
            for name, service in imageflow_services(resolved_compose()).items()}


def test_compose_passes_only_settings_that_exist():
    known = settings_names()
    services = imageflow_services(resolved_compose())
    for name, service in services.items():
        unknown = set(service["environment"]) - known - COMMAND_VARIABLES
        assert not unknown, f"compose service {name} passes {sorted(unknown)}, which settings.py does not read"
        for variable in COMMAND_VARIABLES & set(service["environment"]):
            assert "${" + variable + "}" in command_text(service), (name, variable)


def test_manifests_pass_only_settings_that_exist():
    known = settings_names()
    unknown = set(k8s_environment()) - known - COMMAND_VARIABLES
    assert not unknown, f"the ConfigMap/Secret pass {sorted(unknown)}, which settings.py does not read"
    for name, template in pod_templates().items():
        for container in template["containers"]:
            assert {source.get("configMapRef", source.get("secretRef"))["name"] for source in container["envFrom"]} \
                == {"imageflow"}, name
            assert not set(entry["name"] for entry in container.get("env", [])) - known, name


@pytest.mark.parametrize("role", ["migrate", "web", "worker", "beat", "worker-gpu"])
def test_compose_environment_is_a_valid_production_configuration(role):
    environment = compose_environments()[role]
    assert REQUIRED_IN_PRODUCTION <= set(environment), REQUIRED_IN_PRODUCTION - set(environment)
    result = load_settings(environment)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout)
    assert loaded == {"env": "production", "debug": False, "plain_json": False, "hosts": ["imageflow.example.com"],
                      "log_format": "json", "metrics_token": True}


def test_kubernetes_environment_is_a_valid_production_configuration():
    environment = k8s_environment()
    assert REQUIRED_IN_PRODUCTION <= set(environment), REQUIRED_IN_PRODUCTION - set(environment)
    result = load_settings(environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["env"] == "production"


@pytest.mark.parametrize("override, refusal", [
    ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS is empty or contains the wildcard"),
    ({"AWS_ACCESS_KEY_ID": "imageflow"}, "development object-store credentials"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY is the development default or shorter"),
])
def test_the_production_check_really_runs_on_that_environment(override, refusal):
    # Control: the same environment with one unsafe value is refused, so the passes above mean something.
    result = load_settings({**compose_environments()["web"], **override})
    assert result.returncode != 0
    assert refusal in result.stderr
