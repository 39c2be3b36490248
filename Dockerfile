# syntax=docker/dockerfile:1
# One image for the launcher and the workers: `batchctl launcher` (the default
# command) or `batchctl worker` (the args the launcher gives worker Jobs).
# `docker build .` (BuildKit) builds it as it is. The development and CI machines have no
# Docker engine and reach no image registry: there `make image` builds it with buildah
# (image/build.py), passing a Debian-built stand-in for this base as PYTHON_IMAGE
# (image/stand_in_base.py), and the tests marked `image` run it on every CI run.

ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# --- build: wheels of batchctl and every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchctl/ batchctl/
COPY splitter/ splitter/
COPY launcher/ launcher/
COPY worker/ worker/
# Every dependency ships manylinux wheels for CPython 3.11, so pip builds only batchctl's
# own (pure Python) wheel and no compiler is needed even here; the base has none, so a
# dependency that did need one would fail this step loudly.
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed, nothing else ------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="batchctl" \
      org.opencontainers.image.description="Pub/Sub batch-job launcher and worker for Kubernetes"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Numeric user and group 10001 (the manifests' runAsUser): no home, no shell.
RUN groupadd --system --gid 10001 batchctl \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin batchctl
# The wheels are bind-mounted, not copied, so they never become a layer; --no-index
# installs exactly what the build stage resolved. pip stays in the image on purpose:
# derived images `pip install` their handlers.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/batchctl-*.whl
# Relative paths resolve in /tmp: the worker Jobs mount an emptyDir there and make the
# root filesystem read-only, so it is the one writable place in a pod.
WORKDIR /tmp
USER 10001:10001
# Exec form: in a pod batchctl is PID 1 and receives the kubelet's SIGTERM itself.
ENTRYPOINT ["batchctl"]
CMD ["launcher"]
