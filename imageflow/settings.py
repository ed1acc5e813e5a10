"""ImageFlow settings. Every value comes from the environment with a development default.

IMAGEFLOW_ENV=production turns on the production checks: it refuses DEBUG, the default secret
key, a wildcard or empty ALLOWED_HOSTS and the development object-store credentials (see
`refuse_unsafe_production`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from imageflow.env import Env

BASE_DIR = Path(__file__).resolve().parent.parent
env = Env()

DEVELOPMENT_SECRET_KEY = "imageflow-development-secret-key-do-not-use-in-production"
# The local SeaweedFS's credentials (scripts/services.sh); anyone who read this file knows them.
DEVELOPMENT_S3_ACCESS_KEY_ID = "imageflow"
DEVELOPMENT_S3_SECRET_ACCESS_KEY = "imageflow-secret"

ENVIRONMENT = env.str("IMAGEFLOW_ENV", "development")
if ENVIRONMENT not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"IMAGEFLOW_ENV={ENVIRONMENT!r}: use development, test or production.")
DEBUG = env.bool("DEBUG", ENVIRONMENT != "production")
SECRET_KEY = env.str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])


def refuse_unsafe_production(*, environment: str, debug: bool, secret_key: str, allowed_hosts: list[str],
                             s3_access_key_id: str, s3_secret_access_key: str) -> None:
    """Called once every value is read (after the object-storage section); names every problem
    at once, so a deployment is fixed in one round."""
    if environment != "production":
        return
    problems = []
    if debug:
        problems.append("DEBUG is on")
    if secret_key == DEVELOPMENT_SECRET_KEY or len(secret_key) < 32:
        problems.append("SECRET_KEY is the development default or shorter than 32 characters")
    # "*" accepts any Host header: password-reset links and absolute URLs could be pointed at
    # another site (host header poisoning), and the WebSocket origin check accepts any origin.
    if not allowed_hosts or any(host.strip() in ("*", "") for host in allowed_hosts):
        problems.append("ALLOWED_HOSTS is empty or contains the wildcard '*' (name the hosts served)")
    if s3_access_key_id == DEVELOPMENT_S3_ACCESS_KEY_ID or s3_secret_access_key == DEVELOPMENT_S3_SECRET_ACCESS_KEY:
        problems.append("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are the development object-store credentials")
    if problems:
        raise ImproperlyConfigured("Refusing to start in production: " + "; ".join(problems) + ".")


if ENVIRONMENT == "production":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "imageflow.accounts",
    "imageflow.orgs",
    "imageflow.audit",
    "registry",
    "executions",
    "files",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "imageflow.audit.context.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Django's own 404/405/500 pages under /api/ answer in the API error shape.
    "imageflow.api.errors.ApiErrorMiddleware",
    # Last, so its process_exception is asked first: an outage raised by any view is a 503.
    "imageflow.outages.OutageMiddleware",
]

ROOT_URLCONF = "imageflow.urls"
WSGI_APPLICATION = "imageflow.wsgi.application"
ASGI_APPLICATION = "imageflow.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL -------------------------------------------------------------------------------
# Web processes (uvicorn, ASGI) take connections from a psycopg pool of their own: Django runs each
# request's sync code on a thread of its own, and a persistent connection per thread outlives the
# thread (50 clients left ~100 connections open and the server refusing everyone). A pooled
# process holds at most DATABASE_POOL_MAX_SIZE connections, a request waits up to
# DATABASE_POOL_TIMEOUT_SECONDS for one (then 503), and a connection the server closed is
# replaced by the pool (checked on checkout). Celery worker processes are single-threaded and
# keep one persistent connection each (DATABASE_CONN_MAX_AGE) instead; a `celery` command turns
# the pool off by default. PgBouncer in front of PostgreSQL is the production option for many
# hosts (docs/settings.md).
RUNNING_CELERY = Path(sys.argv[0]).name == "celery"
DATABASE_POOL = env.bool("DATABASE_POOL", not RUNNING_CELERY)
DATABASE_POOL_MIN_SIZE = env.int("DATABASE_POOL_MIN_SIZE", 2)
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", 10)
DATABASE_POOL_TIMEOUT_SECONDS = env.float("DATABASE_POOL_TIMEOUT_SECONDS", 10.0)
# An idle pooled connection above the minimum is closed after this long.
DATABASE_POOL_MAX_IDLE_SECONDS = env.float("DATABASE_POOL_MAX_IDLE_SECONDS", 300.0)


def database_options(*, pool: bool) -> dict:
    if not pool:
        return {}
    # With CONN_HEALTH_CHECKS on, Django has the pool check each connection on checkout: one
    # terminated by the server (a restart, pg_terminate_backend) while idle in the pool is
    # replaced, so the process recovers by itself.
    return {"pool": {
        "min_size": DATABASE_POOL_MIN_SIZE, "max_size": DATABASE_POOL_MAX_SIZE,
        "timeout": DATABASE_POOL_TIMEOUT_SECONDS, "max_idle": DATABASE_POOL_MAX_IDLE_SECONDS,
    }}


DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env.str("DATABASE_NAME", "imageflow"),
        "USER": env.str("DATABASE_USER", "postgres"),
        "PASSWORD": env.str("DATABASE_PASSWORD", ""),
        "HOST": env.str("DATABASE_HOST", "127.0.0.1"),
        "PORT": env.int("DATABASE_PORT", 5432),
        # Pooled connections go back to the pool at the end of each request (CONN_MAX_AGE 0).
        "CONN_MAX_AGE": 0 if DATABASE_POOL else env.int("DATABASE_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": database_options(pool=DATABASE_POOL),
        # Transactions are opened by services, where the boundary is visible (STYLE.md).
        "ATOMIC_REQUESTS": False,
        # Separate test databases let several test runs share one server.
        "TEST": {"NAME": env.str("DATABASE_TEST_NAME", "test_imageflow")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Redis: cache, Celery broker, progress pub/sub ----------------------------------------------
REDIS_URL = env.str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", "imageflow"),
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/1")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", "redis://127.0.0.1:6379/1")
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", "imageflow")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A message whose worker died unacknowledged is delivered again after this many seconds.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 3600),
}
CELERY_RESULT_EXPIRES = 3600

# --- Object storage (S3-compatible: SeaweedFS locally, MinIO or AWS S3 in production) ---------
S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", "http://127.0.0.1:8333")
S3_BUCKET = env.str("S3_BUCKET", "imageflow")
S3_REGION = env.str("S3_REGION", "us-east-1")
AWS_ACCESS_KEY_ID = env.str("AWS_ACCESS_KEY_ID", DEVELOPMENT_S3_ACCESS_KEY_ID)
AWS_SECRET_ACCESS_KEY = env.str("AWS_SECRET_ACCESS_KEY", DEVELOPMENT_S3_SECRET_ACCESS_KEY)
S3_PRESIGNED_EXPIRY_SECONDS = env.int("S3_PRESIGNED_EXPIRY_SECONDS", 300)
# The URL presigned downloads point at, when browsers reach the store by another address.
S3_PUBLIC_ENDPOINT_URL = env.str("S3_PUBLIC_ENDPOINT_URL", S3_ENDPOINT_URL)

# Every value the production checks look at is read by now.
refuse_unsafe_production(environment=ENVIRONMENT, debug=DEBUG, secret_key=SECRET_KEY, allowed_hosts=ALLOWED_HOSTS,
                         s3_access_key_id=AWS_ACCESS_KEY_ID, s3_secret_access_key=AWS_SECRET_ACCESS_KEY)

STORAGES = {
    "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "endpoint_url": S3_ENDPOINT_URL,
            "bucket_name": S3_BUCKET,
            "region_name": S3_REGION,
            "access_key": AWS_ACCESS_KEY_ID,
            "secret_key": AWS_SECRET_ACCESS_KEY,
            "addressing_style": "path",
            "signature_version": "s3v4",
            # Keys are fresh UUIDs, so no existence check (a HEAD request) before each write.
            "file_overwrite": True,
            "querystring_expire": S3_PRESIGNED_EXPIRY_SECONDS,
            "default_acl": None,
        },
    },
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Search (Elasticsearch 8; osmem-server locally) -------------------------------------------
ELASTICSEARCH_URL = env.str("ELASTICSEARCH_URL", "http://127.0.0.1:9200")
# The local OpenSearch-compatible server rejects the 8.x client's vendor media type
# (application/vnd.elasticsearch+json; compatible-with=8). On, the client sends plain
# application/json. Leave it off against a real Elasticsearch 8.
ELASTICSEARCH_PLAIN_JSON = env.bool("ELASTICSEARCH_PLAIN_JSON", ENVIRONMENT != "production")
ELASTICSEARCH_INDEX_PREFIX = env.str("ELASTICSEARCH_INDEX_PREFIX", "imageflow")
ELASTICSEARCH_TIMEOUT_SECONDS = env.float("ELASTICSEARCH_TIMEOUT_SECONDS", 10.0)

# --- Static files, i18n ------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- REST framework ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    # Scoped tokens and the legacy single token; the scoped token's scopes are checked there
    # (imageflow/accounts/authentication.py), and its requests counted by the rate limit.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "imageflow.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["imageflow.accounts.rate_limit.ApiTokenRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "imageflow.api.pagination.StandardPagination",
    "EXCEPTION_HANDLER": "imageflow.api.errors.api_exception_handler",
    # JSON with a nesting limit (API_JSON_MAX_DEPTH); forms and multipart as DRF's defaults.
    "DEFAULT_PARSER_CLASSES": [
        "imageflow.api.parsers.DepthLimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": env.int("API_PAGE_SIZE", 50),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ImageFlow API",
    "DESCRIPTION": "Image-processing pipelines, executions, files and the workflow registry.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ExecutionStatusEnum": "executions.models.ExecutionStatus",
        "StepStatusEnum": "executions.models.StepStatus",
        "ComponentKindEnum": "registry.models.ComponentKind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "imageflow.api.schema.error_postprocessing_hook",
    ],
}

# --- Logging -----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    # Query values named token/ticket/password are redacted from every line (imageflow/log_redaction.py).
    "filters": {"redact_secrets": {"()": "imageflow.log_redaction.RedactSecretsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "elastic_transport": {"level": "WARNING"}},
}

# --- Outages (imageflow/outages.py) ------------------------------------------------------------
# An unavailable database, Redis, broker, object store or search server is answered 503 with this
# Retry-After.
OUTAGE_RETRY_AFTER_SECONDS = env.int("OUTAGE_RETRY_AFTER_SECONDS", 5)

# --- Deployment: probes, metrics, structured logs (docs/deployment.md) -------------------------
# /livez, /readyz and /metrics are answered first, before the ALLOWED_HOSTS check (probes call
# them by address); every request gets an X-Request-ID (taken from the caller or made) that is in
# each of its log lines and is stored on the run it starts (imageflow/request_id.py).
MIDDLEWARE.insert(0, "imageflow.health.ProbeMiddleware")
MIDDLEWARE.insert(1, "imageflow.request_id.RequestIdMiddleware")
# `json`: one JSON object per log line (imageflow/logging_json.py) for a log collector; `text`:
# the plain lines. Both carry the request id.
LOG_FORMAT = env.str("LOG_FORMAT", "json" if ENVIRONMENT == "production" else "text")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use text or json.")
LOGGING["formatters"]["plain"]["format"] = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
LOGGING["formatters"]["json"] = {"()": "imageflow.logging_json.JsonFormatter"}
LOGGING["filters"]["request_id"] = {"()": "imageflow.request_id.RequestIdLogFilter"}
LOGGING["handlers"]["console"]["filters"].append("request_id")
LOGGING["handlers"]["console"]["formatter"] = "json" if LOG_FORMAT == "json" else "plain"
# Prometheus (imageflow/metrics.py): /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`;
# empty (the default) turns it off (404), on the web and on the worker exporter alike.
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
# A Celery worker serves its metrics on this port (0: no exporter).
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", 0)
# A Celery worker lowers its CPU priority by this much at start (its pool processes inherit it), so
# that on cores it shares with web processes the API keeps answering while images are processed;
# on a host of its own it changes nothing. 0 keeps the priority it was started with.
WORKER_NICENESS = env.int("WORKER_NICENESS", 10)
if not 0 <= WORKER_NICENESS <= 19:
    raise ImproperlyConfigured(f"WORKER_NICENESS={WORKER_NICENESS}: use 0 to 19.")
# A directory shared by a role's processes (uvicorn --workers, Celery's pool) for prometheus-client's
# multiprocess mode; prometheus-client reads the variable itself. Empty: each process reports its own.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", "")

# --- Demo data ---------------------------------------------------------------------------------
DEMO_USERNAME = env.str("DEMO_USERNAME", "admin")
DEMO_PASSWORD = env.str("DEMO_PASSWORD", "imageflow-admin")

# --- Pipelines and the execution engine (README: "Pipelines and the execution engine") ---------
PIPELINE_MAX_NODES = env.int("PIPELINE_MAX_NODES", 500)
# A step running longer than this fails ("time limit"); external processes are killed.
STEP_TIME_LIMIT_SECONDS = env.int("STEP_TIME_LIMIT_SECONDS", 600)
# A running step's worker writes heartbeat_at this often; a step silent for longer than the
# timeout is taken over by another delivery or by the periodic sweep.
STEP_HEARTBEAT_SECONDS = env.float("STEP_HEARTBEAT_SECONDS", 5.0)
STEP_HEARTBEAT_TIMEOUT_SECONDS = env.float("STEP_HEARTBEAT_TIMEOUT_SECONDS", 30.0)
# How many times a step's body may start (worker crashes count); then the step fails.
STEP_MAX_ATTEMPTS = env.int("STEP_MAX_ATTEMPTS", 3)
# A step that meets a transient error (object store or another service unavailable, connection
# reset) runs again after a pause that doubles from STEP_RETRY_BACKOFF_SECONDS up to
# STEP_RETRY_BACKOFF_MAX_SECONDS, for as long as the errors have lasted less than the budget; then
# it fails naming the service. The default budget rides out an outage of 3 minutes.
STEP_TRANSIENT_RETRY_BUDGET_SECONDS = env.float("STEP_TRANSIENT_RETRY_BUDGET_SECONDS", 180.0)
STEP_RETRY_BACKOFF_SECONDS = env.float("STEP_RETRY_BACKOFF_SECONDS", 2.0)
STEP_RETRY_BACKOFF_MAX_SECONDS = env.float("STEP_RETRY_BACKOFF_MAX_SECONDS", 30.0)
# Celery worker sessions (step claims and completions, output rows, log lines) commit without
# waiting for the WAL flush unless this is on; a PostgreSQL crash can then lose the last fraction
# of a second of them, which the engine redoes (see executions/worker.py). On: every worker
# commit is durable at once.
ENGINE_SYNCHRONOUS_COMMIT = env.bool("ENGINE_SYNCHRONOUS_COMMIT", False)
# The engine's claim and completion statements run as server-side prepared statements (planned
# once per connection). Off for a transaction-pooling PgBouncer older than 1.21.
ENGINE_PREPARED_STATEMENTS = env.bool("ENGINE_PREPARED_STATEMENTS", True)
EXECUTION_SWEEP_INTERVAL_SECONDS = env.float("EXECUTION_SWEEP_INTERVAL_SECONDS", 30.0)
# Threads a built-in step uses to process several input images at once (1 = one after another).
# 2 per pool process measured best with one pool process per core (bench/engine_throughput.py:
# 4 runs of 25 images, 2 processes on 2 cores: 1.55-1.63x the loop with 2 threads, 1.39x with 3,
# 1.41-1.45x with 4): enough to overlap a thread's object-store waits, few enough to not fight.
STEP_IMAGE_CONCURRENCY = env.int("STEP_IMAGE_CONCURRENCY", 2)
# Items (executions/engine/items.py): a map step over N inputs runs as ceil(N / STEP_ITEM_BATCH)
# items, each claimed and run on its own by any worker (docs/engine.md, "Items").
STEP_ITEM_BATCH = env.int("STEP_ITEM_BATCH", 16)
# Off: a map step runs as one step task over all its inputs, as before items (the run start
# decides; for comparisons in benchmarks, and the tests of the step-level path merge steps use).
STEP_ITEMS_ENABLED = env.bool("STEP_ITEMS_ENABLED", True)
# How many drain tasks a run's ready items are offered to at once: each takes one ready item after
# another (lowest index first) until none is left or its slice is over, then sends itself again,
# so runs share the workers. More than the worker processes there are costs only idle messages.
ITEM_DRAINS_PER_RUN = env.int("ITEM_DRAINS_PER_RUN", 16)
ITEM_DRAIN_SLICE_SECONDS = env.float("ITEM_DRAIN_SLICE_SECONDS", 10.0)
# Routing by resource requirements (executions/engine/queues.py): a component needing a GPU goes to
# the "gpu" queue, one needing at least STEP_HIGHMEM_BYTES of memory to "highmem"; workers started
# with `-Q <queue>` take them (docs/deployment.md). "gpu=gpu,highmem=highmem"; "gpu=" routes nothing.
STEP_QUEUE_ROUTES = env.dict("STEP_QUEUE_ROUTES", {"gpu": "gpu", "highmem": "highmem"})
STEP_HIGHMEM_BYTES = env.int("STEP_HIGHMEM_BYTES", 4 * 1024 ** 3)
# A component asking for at least this many cores goes to STEP_QUEUE_ROUTES["highcpu"], when that
# route is set ("gpu=gpu,highmem=highmem,highcpu=highcpu"); it is not by default.
STEP_HIGHCPU_CORES = env.float("STEP_HIGHCPU_CORES", 8.0)
# What a failed item does to its run, unless the pipeline or the run says: fail (the run fails)
# or continue (the item's downstream items are skipped, the rest finish).
ON_ITEM_ERROR_DEFAULT = env.str("ON_ITEM_ERROR_DEFAULT", "fail")
# The step cache (executions/engine/cache.py): an item of a deterministic component whose
# component, parameters and input checksums were seen before reuses that item's outputs.
STEP_CACHE_ENABLED = env.bool("STEP_CACHE_ENABLED", True)
STEP_CACHE_MAX_BYTES = env.int("STEP_CACHE_MAX_BYTES", 10 * 1024 ** 3)
STEP_CACHE_EVICT_INTERVAL_SECONDS = env.float("STEP_CACHE_EVICT_INTERVAL_SECONDS", 300.0)
# ONNX components (executions/engine/runners/inference.py): how many models a worker process keeps
# loaded (least recently used dropped), and the onnxruntime execution providers to use, in order of
# preference; empty: a GPU provider when this onnxruntime build has one, then the CPU.
ONNX_MODEL_CACHE_SIZE = env.int("ONNX_MODEL_CACHE_SIZE", 4)
ONNX_EXECUTION_PROVIDERS = env.list("ONNX_EXECUTION_PROVIDERS", [])
# Item progress events of one run are coalesced to at most this many per second (the last state
# is always delivered).
ITEM_EVENTS_PER_SECOND = env.float("ITEM_EVENTS_PER_SECOND", 4.0)
# How a `runner="container"` component is started: {image} is the component's docker_image,
# {output_dir} the step's output directory (mounted at the same path in the container),
# {memory_bytes} the component's memory limit (0: none; docker's --memory 0 is no limit).
CONTAINER_COMMAND_TEMPLATE = env.str("CONTAINER_COMMAND_TEMPLATE", "docker run --rm -i --memory {memory_bytes} -v {output_dir}:{output_dir} {image}")
# The GPUs of this worker host (CUDA device indexes or UUIDs, "0,1"): a step of a component asking for
# `"gpu": n` gets the first n in its external process's CUDA_VISIBLE_DEVICES, any other step an
# empty one; empty (the default): CUDA_VISIBLE_DEVICES is left as the worker has it.
WORKER_GPU_DEVICES = env.list("WORKER_GPU_DEVICES", [])
# How often a worker writes which queues it consumes to the broker's Redis (executions/engine/
# presence.py); a worker not heard from for three times this is taken as gone, and a step routed
# to a queue without a live worker is reported as waiting for one.
WORKER_PRESENCE_SECONDS = env.float("WORKER_PRESENCE_SECONDS", 10.0)
# Celery's Django fixup closes the database connection before and after every task unless this
# is set (then only every 2*Nth); engine tasks call close_old_connections() themselves, which
# applies CONN_MAX_AGE and the health check. scripts/run.sh sets 1000 for its worker; it stays off
# by default because an in-process test worker would keep its connection past the test database.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", 0) or None
CELERY_BEAT_SCHEDULE = {
    "executions-sweep-stale-steps": {
        "task": "executions.tasks.execution_sweep",
        "schedule": EXECUTION_SWEEP_INTERVAL_SECONDS,
    },
}
CELERY_BEAT_SCHEDULE["executions-step-cache-evict"] = {
    "task": "executions.tasks.step_cache_evict",
    "schedule": STEP_CACHE_EVICT_INTERVAL_SECONDS,
    "options": {"expires": STEP_CACHE_EVICT_INTERVAL_SECONDS},
}
# The admin dashboard's 14-day aggregates (~200 ms of queries at 100,000 steps) are computed by
# beat this often and kept in the cache; a view reads them (executions/dashboard_selectors.py).
DASHBOARD_REFRESH_SECONDS = env.float("DASHBOARD_REFRESH_SECONDS", 30.0)
CELERY_BEAT_SCHEDULE["executions-dashboard-refresh"] = {
    "task": "executions.tasks.dashboard_refresh",
    "schedule": DASHBOARD_REFRESH_SECONDS,
    # A refresh still queued when the next is due is worth nothing.
    "options": {"expires": DASHBOARD_REFRESH_SECONDS},
}

# --- Automation: triggers and webhooks (docs/automation.md) ------------------------------------
# A webhook attempt waits this long for the receiver's answer; a timeout is retried like a 5xx.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", 5.0)
# A failed attempt (5xx, 408, 425, 429, timeout, no connection) is tried again after a pause that
# doubles from WEBHOOK_RETRY_BACKOFF_SECONDS up to WEBHOOK_RETRY_BACKOFF_MAX_SECONDS, for as long
# as the delivery is younger than WEBHOOK_RETRY_WINDOW_SECONDS (3 hours: ~20 attempts); then it
# fails (a redeliver starts a new window).
WEBHOOK_RETRY_BACKOFF_SECONDS = env.float("WEBHOOK_RETRY_BACKOFF_SECONDS", 10.0)
WEBHOOK_RETRY_BACKOFF_MAX_SECONDS = env.float("WEBHOOK_RETRY_BACKOFF_MAX_SECONDS", 900.0)
WEBHOOK_RETRY_WINDOW_SECONDS = env.float("WEBHOOK_RETRY_WINDOW_SECONDS", 3 * 3600.0)
if WEBHOOK_RETRY_WINDOW_SECONDS < 3600 and ENVIRONMENT == "production":
    raise ImproperlyConfigured("WEBHOOK_RETRY_WINDOW_SECONDS: at least 3600 in production.")
# The Celery queue of webhook attempts; empty: the default queue. A queue of their own (and a
# worker started with -Q for it) keeps slow receivers away from the steps' worker processes.
WEBHOOK_QUEUE = env.str("WEBHOOK_QUEUE", "")
# The sweeps send again what a lost message left behind: due deliveries, pending trigger matches
# (and start batches whose window ran out).
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.float("WEBHOOK_SWEEP_INTERVAL_SECONDS", 30.0)
TRIGGER_SWEEP_INTERVAL_SECONDS = env.float("TRIGGER_SWEEP_INTERVAL_SECONDS", 10.0)
# POST /api/v1/object-events/ (S3 event notifications of MinIO or AWS) answers only
# `Authorization: Bearer <OBJECT_EVENTS_TOKEN>`; empty (the default) turns it off (404). A created
# object of OBJECT_EVENTS_BUCKET under OBJECT_EVENTS_PREFIX<username>/ becomes that user's file.
OBJECT_EVENTS_TOKEN = env.str("OBJECT_EVENTS_TOKEN", "")
OBJECT_EVENTS_BUCKET = env.str("OBJECT_EVENTS_BUCKET", S3_BUCKET)
OBJECT_EVENTS_PREFIX = env.str("OBJECT_EVENTS_PREFIX", "inbox/")
# Schedules (cron in a time zone per pipeline): beat looks for due occurrences this often; a
# schedule with catch_up "all" starts at most SCHEDULE_CATCH_UP_MAX missed occurrences (the latest).
SCHEDULE_TICK_SECONDS = env.float("SCHEDULE_TICK_SECONDS", 15.0)
SCHEDULE_CATCH_UP_MAX = env.int("SCHEDULE_CATCH_UP_MAX", 24)
CELERY_BEAT_SCHEDULE["executions-schedules-tick"] = {
    "task": "executions.automation_tasks.schedules_tick",
    "schedule": SCHEDULE_TICK_SECONDS,
    "options": {"expires": SCHEDULE_TICK_SECONDS},
}
CELERY_BEAT_SCHEDULE["executions-webhook-deliveries-sweep"] = {
    "task": "executions.automation_tasks.webhook_deliveries_sweep",
    "schedule": WEBHOOK_SWEEP_INTERVAL_SECONDS,
    "options": {"expires": WEBHOOK_SWEEP_INTERVAL_SECONDS},
}
CELERY_BEAT_SCHEDULE["executions-triggers-sweep"] = {
    "task": "executions.automation_tasks.triggers_sweep",
    "schedule": TRIGGER_SWEEP_INTERVAL_SECONDS,
    "options": {"expires": TRIGGER_SWEEP_INTERVAL_SECONDS},
}

# --- Live progress and execution logs (README: "Live progress and execution logs") -------------
# Progress events go through a Redis channel layer (its own DB index: not the cache's, not the
# broker's) to WebSocket and SSE clients; the per-run sequence counter and event history live
# there too, under CHANNEL_LAYER_PREFIX.
CHANNEL_LAYER_REDIS_URL = env.str("CHANNEL_LAYER_REDIS_URL", "redis://127.0.0.1:6379/2")
CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", "imageflow")
# Redis pub/sub: one PUBLISH per event whatever the number of watchers, delivered once to each
# ASGI process that has watchers. At-most-once is enough: events are numbered and kept in a
# per-run history, so a consumer that sees a gap fills it from there. Pub/sub channels are not
# per database index, so the prefix is what separates deployments sharing a Redis server.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        # JSON messages: the engine publishes progress events from a Redis script in this format
        # (executions.events.publish), so the layer must not encrypt or prefix them.
        "CONFIG": {"hosts": [CHANNEL_LAYER_REDIS_URL], "prefix": f"{CHANNEL_LAYER_PREFIX}:asgi",
                   "serializer_format": "json"},
    }
}
PROGRESS_EVENT_HISTORY = env.int("PROGRESS_EVENT_HISTORY", 5000)  # events kept per run for replay
PROGRESS_EVENT_TTL_SECONDS = env.int("PROGRESS_EVENT_TTL_SECONDS", 7 * 24 * 3600)
PROGRESS_LONG_POLL_MAX_SECONDS = env.float("PROGRESS_LONG_POLL_MAX_SECONDS", 25.0)
# A WebSocket / event-stream ticket (POST /api/v1/ws-tickets/, then ?ticket=) is good for one
# connection within this many seconds (docs/security.md): long enough to open the socket.
WS_TICKET_TTL_SECONDS = env.int("WS_TICKET_TTL_SECONDS", 30)
# Requests per window one API token may make ("600/min", "10/s", "5000/hour"; empty or "0/min": no
# limit), counted in Redis; over it, 429 with Retry-After (docs/security.md#rate-limit). Checked
# here so that a typo stops the start instead of switching the limit off.
API_TOKEN_RATE_LIMIT = env.str("API_TOKEN_RATE_LIMIT", "600/min")
from imageflow.accounts.rates import parse_rate as _parse_rate  # noqa: E402 - beside the setting it checks

_parse_rate(API_TOKEN_RATE_LIMIT)
# Execution log records are buffered in PostgreSQL and shipped in bulk this often.
LOG_SHIP_INTERVAL_SECONDS = env.float("LOG_SHIP_INTERVAL_SECONDS", 2.0)
LOG_SHIP_BATCH_SIZE = env.int("LOG_SHIP_BATCH_SIZE", 2000)
CELERY_IMPORTS = ["executions.logstore.tasks"]
# Shipped log rows are kept in PostgreSQL this long (what `reindex_logs` can rebuild the search
# index from), then deleted by an hourly task; 0 keeps them forever. Unshipped rows are never deleted.
LOG_BUFFER_RETENTION_DAYS = env.int("LOG_BUFFER_RETENTION_DAYS", 30)
CELERY_BEAT_SCHEDULE["executions-prune-log-buffer"] = {
    "task": "executions.logstore.tasks.prune_log_buffer",
    "schedule": 3600.0,
    "options": {"expires": 3600},
}
CELERY_BEAT_SCHEDULE["executions-ship-logs"] = {
    "task": "executions.logstore.tasks.ship_logs",
    "schedule": LOG_SHIP_INTERVAL_SECONDS,
    "options": {"expires": LOG_SHIP_INTERVAL_SECONDS * 5},
}

# --- Workflow registry (README: "Workflow registry") -------------------------------------------
# Similar-workflow scoring: weight of text (trigram) vs structure (node types, components,
# edges); the backend is a dotted path so an embedding backend (pgvector) can be switched on.
WORKFLOW_SIMILARITY_BACKEND = env.str("WORKFLOW_SIMILARITY_BACKEND", "registry.similarity.TrigramStructureBackend")
WORKFLOW_SIMILARITY_TEXT_WEIGHT = env.float("WORKFLOW_SIMILARITY_TEXT_WEIGHT", 0.5)
WORKFLOW_SIMILARITY_CANDIDATES = env.int("WORKFLOW_SIMILARITY_CANDIDATES", 100)
# Full-text search configuration (PostgreSQL text search config name).
WORKFLOW_SEARCH_CONFIG = env.str("WORKFLOW_SEARCH_CONFIG", "english")
# Apply: `agent`/`tool` nodes that name no registered component are POSTed to this URL.
WORKFLOW_HTTP_RUNNER_URL = env.str("WORKFLOW_HTTP_RUNNER_URL", "http://127.0.0.1:8765/run")
WORKFLOW_HTTP_RUNNER_TIMEOUT_SECONDS = env.float("WORKFLOW_HTTP_RUNNER_TIMEOUT_SECONDS", 30.0)

# --- REST API uploads (README: "REST API") ----------------------------------------------------
# Largest accepted upload; a bigger one is refused with 413 while streaming, nothing stored.
FILE_UPLOAD_MAX_BYTES = env.int("FILE_UPLOAD_MAX_BYTES", 512 * 1024 * 1024)
# Uploads above this many bytes are spooled to a temporary file, never held whole in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = env.int("FILE_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
FILE_UPLOAD_HANDLERS = ["files.api.upload.HashingUploadHandler"]
# Request limits (docs/security.md), checked at the ASGI layer before Django reads the body
# (imageflow/request_limits.py): a multipart body may be FILE_UPLOAD_MAX_BYTES plus this much for
# part headers and form fields; every other body (JSON, forms) at most API_JSON_MAX_BYTES: room
# for a workflow import with its metadata, while a parse of the largest body stays cheap.
REQUEST_MULTIPART_OVERHEAD_BYTES = env.int("REQUEST_MULTIPART_OVERHEAD_BYTES", 1024 * 1024)
API_JSON_MAX_BYTES = env.int("API_JSON_MAX_BYTES", 4 * 1024 * 1024)
# Django's own check (request.body, form fields) agrees with the ASGI one, so WSGI and the test
# client answer the same 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = API_JSON_MAX_BYTES
# JSON nested deeper than this is a 400 (the decoder and every walker after it recurse per level);
# real documents (workflow nodes with parameters and metadata) stay under 10.
API_JSON_MAX_DEPTH = env.int("API_JSON_MAX_DEPTH", 64)
# POST /files/ streams a large upload to the object store while parsing it: parts of this size
# (S3 minimum 5 MiB) are read back from the upload's temporary file, at most this many at once.
FILE_UPLOAD_STREAM_PART_BYTES = env.int("FILE_UPLOAD_STREAM_PART_BYTES", 8 * 1024 * 1024)
FILE_UPLOAD_STREAM_PARTS_IN_FLIGHT = env.int("FILE_UPLOAD_STREAM_PARTS_IN_FLIGHT", 8)

# --- Images: decoding, metadata, outputs (docs/images.md) ---------------------------------------
# Largest image (width x height) accepted: a bigger one is a 400 on upload and a step failure at
# run time, refused from its header before a pixel is decoded (decompression bombs). 120 MP
# covers 100-megapixel cameras; a full decode of one in RGB takes ~360 MB of worker memory.
IMAGE_MAX_PIXELS = env.int("IMAGE_MAX_PIXELS", 120_000_000)
# Images up to this many pixels are decoded whole on upload to catch corrupt pixel data; larger
# ones are checked structurally (header, PNG CRCs, the JPEG's segments to its end marker).
IMAGE_UPLOAD_FULL_DECODE_MAX_PIXELS = env.int("IMAGE_UPLOAD_FULL_DECODE_MAX_PIXELS", 40_000_000)
# Thumbnails (docs/admin.md, "Thumbnails"): derived objects made once per file by a worker,
# thumbnails/<file id>/<size>.jpg (PNG with alpha); the list size and the file page's preview.
FILE_THUMBNAIL_SIZE = env.int("FILE_THUMBNAIL_SIZE", 256)
FILE_PREVIEW_SIZE = env.int("FILE_PREVIEW_SIZE", 1024)
FILE_THUMBNAIL_QUALITY = env.int("FILE_THUMBNAIL_QUALITY", 82)
