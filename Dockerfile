# syntax=docker/dockerfile:1
# churnguard scoring API: `churnguard serve` on port 8000, configured only through environment
# variables (see churnguard/config.py; every setting is CHURNGUARD_<FIELD>):
#
#   MLFLOW_TRACKING_URI        the MLflow server holding the registered model (e.g. http://mlflow:5000)
#   CHURNGUARD_MODEL_NAME      registered model name (default churnguard)
#   CHURNGUARD_MODEL_ALIAS     alias to serve (default champion; polled, swapped without restart)
#   CHURNGUARD_API_KEYS        accepted X-API-Key values, comma-separated, >= 16 characters each
#   CHURNGUARD_ONLINE_STORE    memory (the feature snapshot in each worker) or redis://host:6379/0
#   CHURNGUARD_FEATURE_SNAPSHOT  the feature snapshot (default /data/features.parquet)
#   CHURNGUARD_WORKERS         uvicorn worker processes (default 2)
#   MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD   credentials for an MLflow server behind
#                              authentication (mlflow server --app-name basic-auth, or a proxy)
#   MLFLOW_HTTP_REQUEST_TIMEOUT / _MAX_RETRIES / _BACKOFF_FACTOR   registry call bounds
#                              (churnguard serve defaults them to 5 s, 2 retries, factor 1)
#
# Build: docker build -t churnguard .    Run: see compose.yaml.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: a wheel of the project, installed with its dependencies into /opt/venv -------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# The dependency ranges in pyproject.toml bound every resolved version.
COPY pyproject.toml README.md ./
COPY churnguard/ churnguard/
COPY features/ features/
COPY model/ model/
COPY training/ training/
COPY serving/ serving/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/python -m pip install --no-cache-dir /wheels/churnguard-*.whl \
    && /opt/venv/bin/python -m pip check \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} +

# --- runtime: the venv on a clean slim image, as a non-root user -----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="churnguard" \
      org.opencontainers.image.description="Churn and CLV scoring API with retention actions" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 churnguard \
    && useradd --system --no-log-init --uid 10001 --gid churnguard --home-dir /app \
       --shell /usr/sbin/nologin churnguard \
    && mkdir -p /app /data \
    && chown churnguard:churnguard /app /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHURNGUARD_DATA_DIR=/data \
    CHURNGUARD_HOST=0.0.0.0 \
    CHURNGUARD_PORT=8000 \
    CHURNGUARD_WORKERS=2 \
    CHURNGUARD_MODEL_NAME=churnguard \
    CHURNGUARD_MODEL_ALIAS=champion \
    CHURNGUARD_ONLINE_STORE=memory \
    CHURNGUARD_LOG_LEVEL=info
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CHURNGUARD_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["churnguard", "serve"]
CMD []
