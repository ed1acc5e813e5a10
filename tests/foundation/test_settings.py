"""Settings come from the environment and production refuses unsafe values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imageflow.env import Env
from imageflow.settings import DEVELOPMENT_SECRET_KEY, refuse_unsafe_production

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "x" * 50


def _start_django(**overrides):
    env = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "IMAGEFLOW_ENV"}}
    env.update(overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "imageflow.settings"}, capture_output=True, text=True,
    )


def test_production_with_debug_on_refuses_to_start():
    result = _start_django(IMAGEFLOW_ENV="production", DEBUG="1", SECRET_KEY=STRONG_KEY)
    assert result.returncode != 0
    assert "DEBUG is on" in result.stderr


def test_production_with_the_default_secret_key_refuses_to_start():
    result = _start_django(IMAGEFLOW_ENV="production", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_with_safe_values_starts_with_debug_off():
    result = _start_django(IMAGEFLOW_ENV="production", SECRET_KEY=STRONG_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_development_defaults_to_debug_on():
    result = _start_django()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_refuse_unsafe_production_names_every_problem():
    with pytest.raises(ImproperlyConfigured, match="DEBUG is on; SECRET_KEY"):
        refuse_unsafe_production(environment="production", debug=True, secret_key=DEVELOPMENT_SECRET_KEY)
    refuse_unsafe_production(environment="development", debug=True, secret_key=DEVELOPMENT_SECRET_KEY)


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
