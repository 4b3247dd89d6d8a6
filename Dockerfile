# Edge gateway container: slim, non-root, health-checked.
#   docker build -t edge-gateway .
#   docker run -d --name gw -v /etc/edge-gateway:/etc/edge-gateway:ro -v gw-data:/var/lib/edge-gateway \
#              -p 8750:8750 edge-gateway
# Without a mounted /etc/edge-gateway/gateway.yaml it runs the embedded default (the simulated bottling line,
# served by a child process on 127.0.0.1 -> local store).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EDGEGW_DATA_DIR=/var/lib/edge-gateway \
    EDGEGW_HTTP__BIND=0.0.0.0

WORKDIR /opt/edge-gateway
COPY pyproject.toml README.md requirements.lock ./
COPY gateway ./gateway
COPY connectors ./connectors
COPY simulators ./simulators
COPY bench ./bench
RUN pip install -c requirements.lock ".[all]" \
 && useradd --system --home-dir /var/lib/edge-gateway --shell /usr/sbin/nologin edgegw \
 && mkdir -p /etc/edge-gateway /var/lib/edge-gateway \
 && chown edgegw:edgegw /var/lib/edge-gateway

USER edgegw
VOLUME ["/var/lib/edge-gateway"]
EXPOSE 8750
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "-m", "gateway.healthcheck", "http://127.0.0.1:8750/health"]
# A mounted gateway.yaml wins; otherwise the embedded default. SIGTERM stops cleanly within 5 s.
CMD ["sh", "-c", "if [ -f /etc/edge-gateway/gateway.yaml ]; then exec edge-gateway run -c /etc/edge-gateway/gateway.yaml; else exec edge-gateway run; fi"]
