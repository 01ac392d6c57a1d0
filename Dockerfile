# The movierec application image (MLflow server, Prefect server and workers, the API of
# docker-compose.yml), installed from the lock as `make setup` does. Docker cannot run on the
# development machines; tests/code/test_compose.py holds this topology to `movierec stack`'s.
FROM python:3.11.7-slim-bookworm

# LightFM is compiled from source: a C compiler for the build, and libgomp at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

WORKDIR /app
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_LINK_MODE=copy \
    PATH=/opt/venv/bin:$PATH \
    MOVIEREC_HOME=/data/home \
    PYTHONUNBUFFERED=1
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY . .
RUN uv sync --frozen --no-dev

RUN useradd --create-home --uid 1000 movierec && mkdir -p /data && chown movierec /data
USER movierec
