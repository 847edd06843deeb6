# kms-storage-migrator operator image.
#
#   docker build -t REGISTRY/kms-storage-migrator:0.1.0 .
#
# Two stages: the builder makes a wheel of this project and installs it with its dependencies
# into /opt/venv; the final image gets that venv and nothing else from the builder (no source,
# no pip cache, no compilers). Every dependency ships manylinux wheels for Python 3.11, so the
# builder needs no compiler either. Pin PYTHON_IMAGE to a digest in your own builds.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Sources only (see .dockerignore): tests, docs, charts and local venvs stay out of the context.
COPY pyproject.toml README.md ./
COPY operator ./operator
# --without-pip: the runtime venv never needs an installer; the builder's pip fills it.
RUN python -m venv --without-pip /opt/venv \
 && pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && pip --python /opt/venv/bin/python install --no-compile /tmp/wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
# The UID/GID the Helm chart's podSecurityContext expects (values.yaml: runAsUser 65532).
ARG UID=65532
ARG GID=65532
# A named user so that libraries asking for the home directory or user name get an answer; pip,
# setuptools and wheel come with the base image and are not needed at run time.
RUN groupadd --gid "${GID}" migrator \
 && useradd --uid "${UID}" --gid "${GID}" --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin migrator \
 && python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER ${UID}:${GID}
# Prometheus metrics and kopf's health endpoint (the chart's metrics.port and health.port).
EXPOSE 9090 8080
ENTRYPOINT ["kms-storage-migrator"]
CMD ["run"]
