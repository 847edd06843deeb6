# kms-storage-migrator operator image.
#
#   buildah build -t REGISTRY/kms-storage-migrator:0.1.0 .     (or: docker build ...)
#   scripts/build-image.sh --local-base                      (no registry: a Debian base made here)
#
# Three stages. The builder makes a wheel of this project and installs it with its dependencies
# into /opt/venv. The runtime stage picks out of the base image what that venv runs on. The
# final stage is only that, in one layer: no shell, no compiler, no pip, apt or dpkg (the base
# image's own layers are not inherited, so nothing removed survives underneath). Every
# dependency ships manylinux wheels for Python 3.11: no compiler is needed anywhere.
#
# PYTHON_IMAGE is any Debian bookworm image with Python 3.11 and its venv module: the official
# python:3.11-slim (Python in /usr/local) or Debian's own python3.11 + python3-venv (in /usr);
# PYTHON names the interpreter on the PATH in either. Pin PYTHON_IMAGE to a digest in your
# own builds.
ARG PYTHON_IMAGE=python:3.11-slim
ARG PYTHON=python3

FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Sources only (see .dockerignore): tests, docs, charts and local venvs stay out of the context.
COPY pyproject.toml README.md ./
# The dependencies first, in a layer of their own, so that a change to the sources does not
# install them again. pip comes from a throwaway venv (ensurepip's bundled wheel): Debian's
# Python has no pip of its own; --without-pip: the runtime venv never needs an installer.
# A CA bundle passed as the optional build secret "ca-bundle" is trusted for PyPI
# (TLS-inspecting proxies); like pip's download cache it is mounted for the step only and
# never stored in a layer. kubernetes (37) also ships a second generated client for asyncio,
# kubernetes.aio: 64 MB with its bytecode, imported by nothing here (the operator uses only
# kubernetes.config, and `import kubernetes` does not load aio), so it goes.
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && "${PYTHON}" -m venv /opt/build-tools \
 && "${PYTHON}" -m venv --without-pip /opt/venv \
 && "${PYTHON}" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --no-compile -r /tmp/requirements.txt \
 && rm -rf /opt/venv/lib/python3*/site-packages/kubernetes/aio \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY operator ./operator
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && /opt/build-tools/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --no-deps --no-compile /tmp/wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON
# The UID/GID the Helm chart's podSecurityContext expects (values.yaml: runAsUser 65532).
ARG UID=65532
ARG GID=65532
COPY --from=builder /opt/venv /opt/venv
# /rootfs gets only what the operator runs on: the interpreter, its standard library (without
# ensurepip, IDLE, tkinter and the like), the venv, every shared library ldd finds for them
# (plus libgcc_s, which glibc loads by name when a thread exits), the merged-/usr symlinks,
# /etc/passwd and /etc/group with the operator's user, and an empty /tmp. No shell, no
# coreutils, no pip, apt or dpkg: nothing to install or run but the operator. Both bases are
# Debian bookworm; only the interpreter's prefix differs (/usr/local for python:3.11-slim), and
# Python itself says where it is. (/etc/python3.11 holds Debian's sitecustomize.)
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --gid "${GID}" migrator \
 && useradd --uid "${UID}" --gid "${GID}" --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin migrator \
 && launcher="$(command -v "${PYTHON}")" \
 && interpreter="$(readlink -f "${launcher}")" \
 && stdlib="$("${PYTHON}" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && find "${interpreter}" "${stdlib}/lib-dynload" /opt/venv -type f \
      \( -name '*.so' -o -name '*.so.*' -o -path "${interpreter}" \) -print0 \
    | xargs -0 ldd 2>/dev/null \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' \
      > /tmp/libraries \
 && ldconfig -p | awk '$1 == "libgcc_s.so.1" { print $NF }' >> /tmp/libraries \
 && while read -r library; do \
      echo "$(readlink -f "$(dirname "${library}")")/$(basename "${library}")"; \
      readlink -f "${library}"; \
    done < /tmp/libraries | sort -u > /tmp/runtime-files \
 && mkdir -p /rootfs/etc /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && for link in /bin /sbin /lib /lib64; do \
      if [ -L "${link}" ]; then cp -a "${link}" /rootfs/; fi; \
    done \
 && xargs cp -a --parents -t /rootfs "${launcher}" "${interpreter}" "${stdlib}" /opt/venv \
      /etc/passwd /etc/group /etc/ld.so.cache < /tmp/runtime-files \
 && if [ -d "/etc/${interpreter##*/}" ]; then cp -a --parents "/etc/${interpreter##*/}" /rootfs; fi \
 && for unused in ensurepip idlelib tkinter turtledemo lib2to3 pydoc_data site-packages \
      dist-packages test; do rm -rf "/rootfs${stdlib}/${unused}"; done \
 && rm -f /tmp/libraries /tmp/runtime-files

FROM scratch
ARG UID=65532
ARG GID=65532
COPY --from=runtime /rootfs /
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
