"""deploy/ is checked without a container engine: `docker-compose config` for the compose file,
kubernetes-validate's bundled schemas (no download) for the manifests, and the shape each role
needs (health checks, probes, one beat, the workers' termination grace)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from django.urls import resolve

from tests.deploy.manifests import (
    ENV_EXAMPLE, command_text, compose_config, imageflow_services, k8s_documents, k8s_environment, k8s_kind, pod_templates,
    resolved_compose,
)

# The oldest Kubernetes minor the manifests promise to work on, and the newest schema bundled.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
JOBS = {"migrate", "minio-bucket"}


def test_compose_file_is_valid_for_docker_compose():
    result = compose_config(quiet=True)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_a_secret(tmp_path):
    # Given an env file without SECRET_KEY, when compose resolves the file, then it names the gap.
    env_file = tmp_path / "env"
    env_file.write_text("\n".join(line for line in ENV_EXAMPLE.read_text().splitlines()
                                  if not line.startswith("SECRET_KEY=")))
    result = compose_config(env_file=env_file, quiet=True)
    assert result.returncode != 0
    assert "set SECRET_KEY in deploy/.env" in result.stderr


def test_compose_services_have_health_checks_and_jobs_gate_the_roles():
    config = resolved_compose()
    services = config["services"]
    assert {"postgres", "redis", "minio", "minio-bucket", "elasticsearch", "migrate", "web", "worker", "beat",
            "worker-gpu"} <= set(services)
    for name, service in services.items():
        if name in JOBS:
            assert service["restart"] == "no", name
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for role in ("web", "worker", "beat", "worker-gpu"):
        depends = services[role]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["minio-bucket"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "--workers ${WEB_CONCURRENCY}" in command_text(services["web"])
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    # The bucket job creates the bucket the roles are configured with.
    bucket = services["web"]["environment"]["S3_BUCKET"]
    assert f"mc mb --ignore-existing local/{bucket}" in command_text(services["minio-bucket"])
    # Only the web is published.
    assert [name for name, service in services.items() if service.get("ports")] == ["web"]


def test_compose_roles_are_one_image_chosen_by_command():
    services = imageflow_services(resolved_compose())
    commands = {name: command_text(service) for name, service in services.items()}
    assert set(commands) == {"migrate", "web", "worker", "beat", "worker-gpu"}
    assert commands["migrate"] == "python manage.py migrate --noinput"
    assert commands["web"].startswith("sh -c exec uvicorn imageflow.asgi:application --host 0.0.0.0")
    assert "celery -A imageflow worker" in commands["worker"]
    assert commands["beat"].startswith("celery -A imageflow beat")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_the_kubernetes_schema(version):
    checked = []
    for path, document in k8s_documents(include_examples=False):
        kubernetes_validate.validate(document, version, strict=True)
        checked.append(document["kind"])
    assert sorted(checked) == sorted(["ConfigMap", "Secret", "Job", "Deployment", "Service", "Ingress", "Deployment",
                                      "HorizontalPodAutoscaler", "PodDisruptionBudget", "Deployment"])


def test_the_schema_check_catches_a_misspelled_field():
    (deployment,) = k8s_kind("Deployment", "imageflow-web")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = broken["spec"]["template"]["spec"][
        "containers"][0].pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_keda_example_scales_the_worker_deployment_on_the_configured_queue():
    (scaled,) = k8s_kind("ScaledObject")
    environment = k8s_environment()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "imageflow-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    # The Celery queue is a Redis list named after the default queue, in the broker's database.
    assert trigger["metadata"]["listName"] == environment.get("CELERY_TASK_DEFAULT_QUEUE", "imageflow")
    assert environment["CELERY_BROKER_URL"].endswith("/" + trigger["metadata"]["databaseIndex"])


def test_probes_use_livez_and_readyz_which_the_web_serves():
    web = pod_templates()["imageflow-web"]["containers"][0]
    assert web["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert resolve("/livez").url_name == "livez"
    assert resolve("/readyz").url_name == "readyz"
    for name, template in pod_templates().items():
        for container in template["containers"]:
            assert container["resources"]["requests"]["cpu"], name
            assert container["resources"]["requests"]["memory"], name
            if name != "imageflow-migrate":
                assert "livenessProbe" in container and "readinessProbe" in container, name


def test_worker_termination_grace_covers_the_heartbeat_takeover():
    environment = k8s_environment()
    worker = pod_templates()["imageflow-worker"]
    assert worker["terminationGracePeriodSeconds"] > float(environment["STEP_HEARTBEAT_TIMEOUT_SECONDS"])
    (budget,) = k8s_kind("PodDisruptionBudget")
    (deployment,) = k8s_kind("Deployment", "imageflow-worker")
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["maxUnavailable"] == 1


def test_beat_is_one_replica_replaced_not_rolled():
    (beat,) = k8s_kind("Deployment", "imageflow-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert k8s_kind("HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["name"] == "imageflow-worker"

