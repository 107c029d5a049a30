# CPU image of the marketplace pipeline (and, from the serving issue on, its API).
# Build:  docker build -t marketplace .
# Run the pipeline on an export mounted at /app/data:
#   docker run --rm -v "$PWD/data:/app/data" -v "$PWD/outputs:/app/outputs" marketplace
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1

# git: DVC keeps its pipeline state in a git work tree.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 app
WORKDIR /app

# Dependencies first (cached layer). The CPU wheel index supplies torch/torchvision
# builds without CUDA; every other version comes from the lock.
COPY requirements.lock ./
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.lock

COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-deps .

COPY pipeline ./pipeline
COPY serving ./serving
COPY dvc.yaml params.yaml .dvcignore ./
COPY .dvc/config ./.dvc/config
RUN git init -q . && chown -R app:app /app

USER app
CMD ["dvc", "repro"]
