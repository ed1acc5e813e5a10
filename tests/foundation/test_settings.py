"""Settings come from the environment and production refuses unsafe values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imageflow.env import Env
from imageflow.settings import (
    DEVELOPMENT_S3_ACCESS_KEY_ID,
    DEVELOPMENT_S3_SECRET_ACCESS_KEY,
    DEVELOPMENT_SECRET_KEY,
    refuse_unsafe_production,
)

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "x" * 50
# What a production deployment sets besides the secret key.
PRODUCTION = {"ALLOWED_HOSTS": "imageflow.example.com", "AWS_ACCESS_KEY_ID": "prod-access-key",
              "AWS_SECRET_ACCESS_KEY": "s" * 40}
SAFE = {"environment": "production", "debug": False, "secret_key": STRONG_KEY,
        "allowed_hosts": ["imageflow.example.com"], "s3_access_key_id": "prod-access-key",
        "s3_secret_access_key": "s" * 40}


def _start_django(**overrides):
    env = {k: v for k, v in os.environ.items()
           if k not in {"DEBUG", "SECRET_KEY", "IMAGEFLOW_ENV", "ALLOWED_HOSTS", "AWS_ACCESS_KEY_ID",
                        "AWS_SECRET_ACCESS_KEY"}}
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "imageflow.settings"}, capture_output=True, text=True,
    )


def test_production_with_debug_on_refuses_to_start():
    result = _start_django(IMAGEFLOW_ENV="production", DEBUG="1", SECRET_KEY=STRONG_KEY, **PRODUCTION)
    assert result.returncode != 0
    assert "DEBUG is on" in result.stderr


def test_production_with_the_default_secret_key_refuses_to_start():
    result = _start_django(IMAGEFLOW_ENV="production", DEBUG="0", **PRODUCTION)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.parametrize("hosts", ["*", "imageflow.example.com,*", ""])
def test_production_with_a_wildcard_or_empty_allowed_hosts_refuses_to_start(hosts):
    result = _start_django(IMAGEFLOW_ENV="production", SECRET_KEY=STRONG_KEY, **{**PRODUCTION, "ALLOWED_HOSTS": hosts})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is empty or contains the wildcard" in result.stderr


def test_production_with_the_development_object_store_credentials_refuses_to_start():
    # given everything else safe but the object-store credentials left at their defaults
    result = _start_django(IMAGEFLOW_ENV="production", SECRET_KEY=STRONG_KEY, ALLOWED_HOSTS="imageflow.example.com")
    assert result.returncode != 0
    assert "development object-store credentials" in result.stderr


def test_production_with_safe_values_starts_with_debug_off():
    result = _start_django(IMAGEFLOW_ENV="production", SECRET_KEY=STRONG_KEY, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_development_defaults_to_debug_on():
    result = _start_django()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_refuse_unsafe_production_names_every_problem():
    unsafe = {"environment": "production", "debug": True, "secret_key": DEVELOPMENT_SECRET_KEY, "allowed_hosts": ["*"],
              "s3_access_key_id": DEVELOPMENT_S3_ACCESS_KEY_ID, "s3_secret_access_key": DEVELOPMENT_S3_SECRET_ACCESS_KEY}
    with pytest.raises(ImproperlyConfigured) as refused:
        refuse_unsafe_production(**unsafe)
    assert str(refused.value) == (
        "Refusing to start in production: DEBUG is on; "
        "SECRET_KEY is the development default or shorter than 32 characters; "
        "ALLOWED_HOSTS is empty or contains the wildcard '*' (name the hosts served); "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are the development object-store credentials.")
    # the same values outside production, and safe values in it, pass
    refuse_unsafe_production(**{**unsafe, "environment": "development"})
    refuse_unsafe_production(**SAFE)


@pytest.mark.parametrize("change", [
    {"allowed_hosts": []},
    {"allowed_hosts": ["imageflow.example.com", "*"]},
    {"s3_access_key_id": DEVELOPMENT_S3_ACCESS_KEY_ID},
    {"s3_secret_access_key": DEVELOPMENT_S3_SECRET_ACCESS_KEY},
])
def test_each_unsafe_host_or_credential_alone_is_refused(change):
    with pytest.raises(ImproperlyConfigured):
        refuse_unsafe_production(**{**SAFE, **change})


def test_a_subdomain_wildcard_is_a_named_host_and_allowed():
    refuse_unsafe_production(**{**SAFE, "allowed_hosts": [".example.com"]})


def test_env_reader_parses_types_and_rejects_nonsense():
    env = Env({"A": "true", "B": "0", "C": "42", "D": "a, b,", "E": "maybe", "F": "4x"})
    assert env.bool("A", False) is True
    assert env.bool("B", True) is False
    assert env.bool("MISSING", True) is True
    assert env.int("C", 0) == 42
    assert env.list("D", []) == ["a", "b"]
    with pytest.raises(ImproperlyConfigured, match="E='maybe'"):
        env.bool("E", False)
    with pytest.raises(ImproperlyConfigured, match="F='4x'"):
        env.int("F", 0)
