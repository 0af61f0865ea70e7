# The image every task of `textclf kfp` runs in: this project, DVC, git and the kfp
# runtime, so no task installs anything when it starts. The code a point trains with
# comes from the git revision it clones; the image supplies the dependencies.
#
#   docker build -t REGISTRY/textclf:TAG .                                  # CPU
#   docker build --build-arg TORCH_VARIANT=cu128 -t REGISTRY/textclf:TAG-cuda .  # CUDA
#
# TORCH_VARIANT is a wheel index of download.pytorch.org (cpu, cu126, cu128, ...): the
# CUDA wheels bring their own CUDA libraries, so the base image stays the same; the node
# needs an NVIDIA driver and device plugin. torch stays at the version pyproject pins.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1

# torch first, from the chosen index, so that installing the project keeps it.
RUN pip install -U pip \
    && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"

WORKDIR /opt/textclf
COPY pyproject.toml README.md ./
COPY src ./src
# tune: Optuna, for the workers of `textclf kfp compile --tune`; psycopg2-binary is the
# PostgreSQL driver of the database those workers share (swap it for your database's).
RUN pip install ".[kfp,tune]" psycopg2-binary \
    && python -c "import torch, kfp, dvc, optuna, textclf.sweeps.point; print('torch', torch.__version__, 'kfp', kfp.__version__)"

WORKDIR /work
