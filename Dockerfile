# kms-storage-migrator operator image.
#
#   buildah build -t REGISTRY/kms-storage-migrator:0.1.0 .     (or: docker build ...)
#   scripts/build-image.sh --local-base                      (no registry: a Debian base made here)
#
# Three stages. The builder makes a wheel of this project and installs it with its dependencies
# into /opt/venv. The runtime stage is the base image plus that venv, the operator's user, and
# minus every installer (pip, ensurepip's bundled wheels, apt, dpkg) and documentation. The
# final stage is that file system copied into one layer, so what was removed is really gone,
# not only hidden under a later layer. Every dependency ships manylinux wheels for Python 3.11:
# no compiler is needed anywhere.
#
# PYTHON_IMAGE is any Debian bookworm image with Python 3.11 and its venv module: the official
# python:3.11-slim (Python in /usr/local) or Debian's own python3.11 + python3-venv (in /usr);
# PYTHON names the interpreter on the PATH in either. Pin PYTHON_IMAGE to a digest in your
# own builds.
ARG PYTHON_IMAGE=python:3.11-slim
ARG PYTHON=python3

FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Sources only (see .dockerignore): tests, docs, charts and local venvs stay out of the context.
COPY pyproject.toml README.md ./
COPY operator ./operator
# pip comes from a throwaway venv (ensurepip's bundled wheel): Debian's Python has no pip of
# its own. --without-pip: the runtime venv never needs an installer. A CA bundle passed as the
# optional build secret "ca-bundle" is trusted for PyPI (TLS-inspecting proxies); it is mounted
# for this step only and never stored in a layer. kubernetes (37) also ships a second generated
# client for asyncio, kubernetes.aio: 64 MB with its bytecode, imported by nothing here (the
# operator uses only kubernetes.config, and `import kubernetes` does not load aio), so it goes.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && "${PYTHON}" -m venv /opt/build-tools \
 && "${PYTHON}" -m venv --without-pip /opt/venv \
 && /opt/build-tools/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --no-compile /tmp/wheels/*.whl \
 && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON
# The UID/GID the Helm chart's podSecurityContext expects (values.yaml: runAsUser 65532).
ARG UID=65532
ARG GID=65532
COPY --from=builder /opt/venv /opt/venv
# A named user so that libraries asking for the home directory or user name get an answer.
# Then the installers go: pip (python:3.11-slim has it, Debian's Python has not), ensurepip
# and its bundled wheels (they would install pip again), apt, dpkg and debconf with their
# databases, and perl-base, which only their scripts use. They are removed by the list of
# files dpkg itself records for them; directories stay (with merged /usr, /bin and /sbin are
# symlinks to directories other packages share). Documentation and translations are never
# read by a daemon.
RUN groupadd --gid "${GID}" migrator \
 && useradd --uid "${UID}" --gid "${GID}" --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin migrator \
 && if "${PYTHON}" -m pip --version >/dev/null 2>&1; then \
      "${PYTHON}" -m pip uninstall --yes --quiet pip setuptools wheel; \
    fi \
 && rm -rf "$("${PYTHON}" -c 'import ensurepip, os; print(os.path.dirname(ensurepip.__file__))')" \
      /usr/share/python-wheels \
 && dpkg-query --listfiles apt dpkg debconf libapt-pkg6.0 perl-base > /tmp/package-manager-files \
 && while read -r path; do \
      if [ ! -d "${path}" ]; then rm -f "${path}"; fi; \
    done < /tmp/package-manager-files \
 && rm -rf /tmp/package-manager-files /var/lib/dpkg /var/lib/apt /var/cache/apt /var/cache/debconf \
      /etc/apt /etc/dpkg /var/log/* /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale

FROM scratch
ARG UID=65532
ARG GID=65532
# One layer holding the runtime stage's file system: flattening is the point here (what the
# runtime stage removed must not survive in the base image's layers), not an accident.
# hadolint ignore=DL3067
COPY --from=runtime / /
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER ${UID}:${GID}
# Prometheus metrics and kopf's health endpoint (the chart's metrics.port and health.port).
EXPOSE 9090 8080
ENTRYPOINT ["kms-storage-migrator"]
CMD ["run"]
