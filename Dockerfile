# syntax=docker/dockerfile:1.7
# One image for both processes:
#   docker build -t syncmesh:0.1.0 .
#   docker run --rm -v $PWD/edge.toml:/etc/syncmesh/edge.toml:ro syncmesh:0.1.0 edge --config /etc/syncmesh/edge.toml
#   docker run --rm -p 1053:53/udp -p 1053:53/tcp -p 8080:8080 \
#     -v $PWD/registry.toml:/etc/syncmesh/registry.toml:ro syncmesh:0.1.0 registry --config /etc/syncmesh/registry.toml
# Dependencies come from uv.lock only (`uv sync --frozen`); the runtime stage holds
# the interpreter of the base image and one virtual environment, no build tools.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# uv itself is a PyPI package: no other download than the package index.
ARG UV_VERSION=0.13.8
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/syncmesh
RUN pip install "uv==${UV_VERSION}"
WORKDIR /src
# Third-party dependencies first: this layer is reused while only syncmesh's own code changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
# Then the project itself, installed into the environment (not as an editable link to /src).
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable \
 && /opt/syncmesh/bin/syncmesh --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="syncmesh" \
      org.opencontainers.image.description="Cross-cluster service-discovery sync over NATS JetStream with nearest-healthy DNS" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 syncmesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin syncmesh
COPY --from=build /opt/syncmesh /opt/syncmesh
# SYNCMESH_HEALTHCHECK_URL: the registry's admin /healthz by default; an edge agent points it
# at its metrics port (http://127.0.0.1:9101/metrics); empty turns the check off.
ENV PATH=/opt/syncmesh/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNCMESH_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
WORKDIR /etc/syncmesh
# DNS (registry: set dns.port = 53 and dns.address = "0.0.0.0"), admin HTTP (registry), agent metrics.
EXPOSE 53/udp 53/tcp 8080/tcp 9101/tcp
USER 10001:10001
# No curl in the slim image: Python's urllib; an HTTP error or a refused connection exits 1.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request as r; u = os.environ.get('SYNCMESH_HEALTHCHECK_URL', ''); u and r.urlopen(u, timeout=3).close()"]
# edge and registry handle SIGTERM like Ctrl-C: readiness withdrawn, work drained, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["syncmesh"]
CMD ["registry", "--config", "/etc/syncmesh/registry.toml"]
