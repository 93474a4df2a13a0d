# gatekeeper's container image: `gatekeeper serve` as a non-root user on python:3.11 slim.
# The base tag is pinned to a patch release and Debian suite (tests/test_packaging.py); bump
# it on purpose, e.g. for security updates, not by accident on the next build.
#   docker build -t <registry>/gatekeeper:0.1.0 .
# The Helm chart (helm/gatekeeper) runs it with a read-only root filesystem, uid 10001 and
# the configuration mounted at /etc/gatekeeper/config.yaml.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Everything the wheel is built from: setup.py packs rules/ into gatekeeper/shipped_rules/.
COPY pyproject.toml setup.py README.md ./
COPY gatekeeper ./gatekeeper
COPY rules ./rules
RUN pip install . \
    && rm -rf /src \
    && groupadd --system --gid 10001 gatekeeper \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin gatekeeper

# The default gate rules, for `docker run` without the chart (the chart mounts its own).
COPY rules/*.yaml /etc/gatekeeper/rules/

WORKDIR /
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["gatekeeper", "serve"]
CMD ["--config", "/etc/gatekeeper/config.yaml"]
