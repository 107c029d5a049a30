# CPU images of marketplace: one base, two targets.
#   docker build --target pipeline -t marketplace-pipeline .   # runs `dvc repro`
#   docker build --target serving  -t marketplace-api .        # the FastAPI service
# Run the pipeline on an export mounted at /app/data:
#   docker run --rm -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" marketplace-pipeline
# The API reads the registry named by MARKETPLACE_TRACKING_URI (see docker-compose.yml).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1

# git: DVC keeps its pipeline state in a git work tree.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 app \
    && mkdir -p /mlflow && chown app:app /mlflow
WORKDIR /app

# Dependencies first (cached layer). The CPU wheel index supplies torch/torchvision
# builds without CUDA (2.13.0+cpu satisfies the lock's ==2.13.0 and sorts above it);
# every other version comes from the lock.
COPY requirements.lock ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps .

COPY pipeline ./pipeline
COPY serving ./serving
COPY dvc.yaml params.yaml .dvcignore MLproject ./
COPY .dvc/config ./.dvc/config
RUN git init -q . && chown -R app:app /app

FROM base AS pipeline
USER app
CMD ["dvc", "repro"]

# Last stage = the default target.
FROM base AS serving
USER app
EXPOSE 8000
# Ready = a model and its index are loaded (503 before); start-period covers the load.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status != 200)"]
CMD ["python", "-m", "serving", "--host", "0.0.0.0", "--port", "8000"]
