# syntax=docker/dockerfile:1
# One image for every role; the command picks it (deploy/compose.yaml, deploy/k8s/):
#   web      uvicorn imageflow.asgi:application --host 0.0.0.0 --port 8000 --workers $WEB_CONCURRENCY --lifespan off
#   worker   celery -A imageflow worker --loglevel=INFO --concurrency=$WORKER_CONCURRENCY
#   beat     celery -A imageflow beat --loglevel=INFO --schedule=/tmp/celerybeat-schedule  (exactly one)
#   migrate  python manage.py migrate --noinput  (a one-shot job before a new version starts)

# --- build: wheels of the pinned requirements (compilers stay in this stage) -------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libpq-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
# graphviz: the admin draws pipeline DAGs with `dot`. tini: signals reach uvicorn/celery, zombies reaped.
RUN apt-get update \
 && apt-get install -y --no-install-recommends graphviz libpq5 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 imageflow \
 && useradd --system --uid 10001 --gid imageflow --home-dir /app --shell /usr/sbin/nologin imageflow
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=imageflow.settings \
    IMAGEFLOW_ENV=production \
    WEB_CONCURRENCY=2 \
    WORKER_CONCURRENCY=2 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=imageflow:imageflow . /app
# Static files are collected at build time (whitenoise serves them from var/static). Settings
# load in production mode here, so placeholder values satisfy its refusals; nothing is contacted.
RUN SECRET_KEY=collectstatic-only-build-time-placeholder-key-0000 ALLOWED_HOSTS=build.invalid \
    AWS_ACCESS_KEY_ID=build AWS_SECRET_ACCESS_KEY=build \
    python manage.py collectstatic --noinput -v0 \
 && mkdir -p /app/var/log /tmp/prometheus \
 && chown -R imageflow:imageflow /app/var /tmp/prometheus
USER imageflow:imageflow
EXPOSE 8000 9100
ENTRYPOINT ["/usr/bin/tini", "--", "/app/deploy/entrypoint.sh"]
# The web role by default; `sh -c` so $WEB_CONCURRENCY is read at start.
CMD ["sh", "-c", "exec uvicorn imageflow.asgi:application --host 0.0.0.0 --port 8000 --workers ${WEB_CONCURRENCY} --lifespan off --no-server-header"]
