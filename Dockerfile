# haproxyd container image.
#
#   docker build -t haproxyd:local .
#   docker run --rm -p 8080:8080 \
#       -v "$PWD/haproxyd.yaml:/etc/haproxyd/haproxyd.yaml:ro" haproxyd:local
#   docker run --rm -v "$PWD/haproxyd.yaml:/etc/haproxyd/haproxyd.yaml:ro" haproxyd:local \
#       check -c /etc/haproxyd/haproxyd.yaml
#   docker kill --signal HUP CONTAINER        # reload the mounted file
#
# The config is not baked in: mount it at /etc/haproxyd/haproxyd.yaml. In a container,
# listeners and the admin API must bind 0.0.0.0 (or [::]) to be reachable from outside
# it; the admin API then needs a token (env HAPROXYD_ADMIN_TOKEN) or it refuses to start.
# See docs/operations.md. Linted by tests/deploy/test_dockerfile.py (hadolint).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The build compiles the data plane (setup.py: Cython, then a C compiler), which the
# slim image lacks; the full image of the same Python and Debian release has one, and
# the virtualenv it builds runs unchanged on the slim runtime.
ARG BUILD_IMAGE=python:3.11-bookworm

# -- build: install haproxyd and its dependencies into a virtualenv ----------------------
FROM ${BUILD_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY haproxyd ./haproxyd
RUN python -m venv /opt/haproxyd \
    && /opt/haproxyd/bin/pip install --no-cache-dir ".[tracing]" \
    && /opt/haproxyd/bin/haproxyd version

# -- runtime: the virtualenv, two helper scripts, an unprivileged user -------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="haproxyd" \
      org.opencontainers.image.description="L7 HTTP/1.1 reverse proxy and load balancer" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/haproxyd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HAPROXYD_CONFIG=/etc/haproxyd/haproxyd.yaml
# /var/log/haproxyd is the user's: a named volume mounted there (the HA stack's access
# logs) starts with this directory's owner, so the daemon can write to it.
RUN groupadd --system --gid 10001 haproxyd \
    && useradd --system --uid 10001 --gid haproxyd --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin haproxyd \
    && mkdir -p /etc/haproxyd /var/log/haproxyd \
    && chown haproxyd:haproxyd /var/log/haproxyd
COPY --from=build /opt/haproxyd /opt/haproxyd
COPY deploy/healthcheck.py deploy/demo_backend.py /opt/haproxyd/libexec/
USER 10001:10001
# 8080: the proxy listener of the example configs; 9901: the admin API (status page,
# HA API, /metrics). The config decides the real ports.
EXPOSE 8080 9901
# Liveness of the admin API (GET /api/v1/ha/status must answer 200); see the script.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/opt/haproxyd/bin/python", "/opt/haproxyd/libexec/healthcheck.py"]
# SIGTERM: stop accepting, drain up to timeouts.shutdown, exit 0 (give `docker stop -t`
# at least that long). Exec form: the daemon is PID 1 and gets SIGHUP/SIGTERM itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/haproxyd/bin/haproxyd"]
CMD ["-c", "/etc/haproxyd/haproxyd.yaml"]
