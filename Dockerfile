# Relay's container image: the gateway server, the background workers and the
# migrations, all from the `relay` console script (the same entry points as
# `make up`).  Envoy runs beside it from the official Envoy image (deploy/k8s).
#
#   docker build -t relay:dev .
#   docker run --rm relay:dev migrate          # apply migrations (DATABASE_URL)
#   docker run --rm relay:dev serve            # the gRPC server (RELAY_* settings)
#
# Two stages: the builder has the compilers and pip's cache; the runtime stage
# gets only the virtualenv and Relay's sources, and runs as an unprivileged user.
# Both stages share one base so the virtualenv's interpreter path is valid in both.

FROM python:3.11.7-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/relay/venv
ENV PATH=/opt/relay/venv/bin:$PATH

WORKDIR /app
# The exact versions `make test` runs, as constraints: only the packages the server
# needs are installed, at these pins (pip refuses extras in a constraints file).
COPY requirements-dev.txt ./
RUN sed -E 's/\[[^]]*\]//' requirements-dev.txt > /tmp/constraints.txt
COPY proto_python/ proto_python/
COPY sdk_python/ sdk_python/
COPY server/ server/
# Editable installs: Relay finds migrations/ and envoy/ beside its sources (/app),
# exactly as in a checkout; the `relay` console script lands in the venv.
RUN pip install --constraint /tmp/constraints.txt \
      -e ./proto_python -e ./sdk_python -e ./server \
 && python -m compileall -q /app/server /app/proto_python /app/sdk_python

FROM python:3.11.7-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="relay" \
      org.opencontainers.image.description="Relay: a self-hostable, multi-tenant LLM API gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid so Kubernetes' runAsUser/fsGroup can name it.
RUN groupadd --system --gid 10001 relay \
 && useradd --system --uid 10001 --gid relay --no-create-home --home-dir /app --shell /usr/sbin/nologin relay

COPY --from=builder /opt/relay/venv /opt/relay/venv
COPY --from=builder /app /app
COPY migrations/ /app/migrations/
COPY envoy/ /app/envoy/
COPY docs/openapi.json /app/docs/openapi.json

# The state directory (request-log spool, local archive) is the only writable
# path; Kubernetes mounts an emptyDir there (the root file system is read-only).
RUN mkdir -p /var/lib/relay && chown relay:relay /var/lib/relay
ENV PATH=/opt/relay/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RELAY_STATE_DIR=/var/lib/relay \
    RELAY_GRPC_HOST=0.0.0.0 \
    RELAY_GRPC_PORT=50051

WORKDIR /app
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["relay"]
CMD ["serve"]
