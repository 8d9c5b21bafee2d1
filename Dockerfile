# Circuit Explorer for a GPU host. Build and run (NVIDIA Container Toolkit needed for --gpus):
#   docker build -t circuit-explorer .
#   docker run --gpus all -p 8501:8501 -v circuit-explorer-cache:/home/app/.cache/circuit-explorer circuit-explorer
# The CUDA libraries come with the torch wheel; the host only needs the NVIDIA driver.
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CIRCUIT_EXPLORER_SETTINGS=/app/settings.docker.toml

RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app app

WORKDIR /app

# Same steps as the README's GPU install: the CUDA build of torch first, then the
# pinned requirements (whose torch==2.13.0 pin the CUDA build already satisfies).
COPY requirements.txt ./
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install --no-cache-dir -r requirements.txt

COPY --chown=app:app . .

# Same settings as settings.toml, but the result cache lives on the volume below.
RUN sed 's#^directory = .*#directory = "/home/app/.cache/circuit-explorer/results"#' settings.toml > settings.docker.toml \
    && mkdir -p /home/app/.cache/circuit-explorer \
    && chown -R app:app /home/app/.cache /app/settings.docker.toml

USER 10001:10001
VOLUME ["/home/app/.cache/circuit-explorer"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).status == 200 else 1)"]

CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
