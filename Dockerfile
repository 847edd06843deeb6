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
#
# Size: the cuts marked "Cut:" below took it from 202 to 123 MB (docs/install.md, section 1,
# says where the bytes go).
ARG PYTHON_IMAGE=python:3.11-slim
ARG PYTHON=python3

FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# strip, from Debian's binutils: only this stage has it (the final image gets none of its
# files). Not pinned: the version is the one the base's Debian release carries.
# hadolint ignore=DL3008
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Sources only (see .dockerignore): tests, docs, charts and local venvs stay out of the context.
COPY pyproject.toml README.md ./
# The dependencies first, in a layer of their own, so that a change to the sources does not
# install them again. pip comes from a throwaway venv (ensurepip's bundled wheel): Debian's
# Python has no pip of its own; --without-pip: the runtime venv never needs an installer.
# A CA bundle passed as the optional build secret "ca-bundle" is trusted for PyPI
# (TLS-inspecting proxies); like pip's download cache it is mounted for the step only and
# never stored in a layer.
#
# Cut: all of the kubernetes package but 1.7 MB of its 121 (with bytecode). The operator uses it
# only for its credential loaders (kubernetes.config and client.Configuration); requests go
# over aiohttp. kubernetes.client imports its generated API classes and models lazily, by name,
# on first use, so what is never named is never loaded. Measured in the container through a
# whole migration (every module in sys.modules at exit): no API class and three models, the
# ones kopf imports at start (V1ObjectMeta, V1OwnerReference and the V1ManagedFieldsEntry
# they refer to; kopf swallows the ImportError, so tests/integration/test_image.py checks
# them). Gone: the second, asyncio client kubernetes.aio (64 MB), all 66 API modules (35 MB),
# the other 842 models (20 MB), and the package's own tests. Code that starts to use a
# generated API class or model must keep it here.
# Cut: debug symbols. The C extensions of aiohttp, frozenlist, propcache, multidict and PyYAML
# and cryptography's Rust core ship them (grpcio, pydantic-core, protobuf's upb and yarl come
# stripped); strip --strip-unneeded keeps the dynamic symbols the interpreter links against
# (13 MB less). No library here was repaired with patchelf (none has an RPATH), the case where
# stripping has been known to corrupt one.
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && "${PYTHON}" -m venv /opt/build-tools \
 && "${PYTHON}" -m venv --without-pip /opt/venv \
 && "${PYTHON}" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > /tmp/requirements.txt \
 && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --no-compile -r /tmp/requirements.txt \
 && kubernetes="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/kubernetes" \
 && rm -rf "${kubernetes}/aio" \
 && find "${kubernetes}" -type f \( -name '*_test.py' -o -name 'test_*.py' \) -delete \
 && find "${kubernetes}/client/api" "${kubernetes}/client/models" -maxdepth 1 -type f -name '*.py' \
      ! -name __init__.py ! -name v1_object_meta.py ! -name v1_owner_reference.py \
      ! -name v1_managed_fields_entry.py -delete \
 && find /opt/venv -type f -name '*.so*' -exec strip --strip-unneeded {} + \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib
COPY operator ./operator
# The import at the end fails the build if a cut above took something the operator loads at start.
RUN --mount=type=secret,id=ca-bundle \
    --mount=type=cache,target=/root/.cache/pip,sharing=locked \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
 && /opt/build-tools/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --no-deps --no-compile /tmp/wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/python -c 'import kms_storage_migrator.cli, kms_storage_migrator.handlers'

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON
# The UID/GID the Helm chart's podSecurityContext expects (values.yaml: runAsUser 65532).
ARG UID=65532
ARG GID=65532
COPY --from=builder /opt/venv /opt/venv
# /rootfs gets only what the operator runs on: the interpreter, its standard library less the
# parts named below, the venv, every shared library ldd finds for them (plus libgcc_s, which
# glibc loads by name when a thread exits), the merged-/usr symlinks, /etc/passwd and
# /etc/group with the operator's user, and an empty /tmp. No shell, no coreutils, no pip, apt
# or dpkg: nothing to install or run but the operator. Both bases are Debian bookworm; only the
# interpreter's prefix differs (/usr/local for python:3.11-slim), and Python itself says where
# it is. (/etc/python3.11 holds Debian's sitecustomize.)
#
# Cut: standard library parts no module the operator loads imports (a grep of the venv finds
# only cffi's compile-time helper naming distutils and websocket-client's wsdump command
# naming readline; none was in sys.modules after a whole migration): installers and build tools
# (ensurepip, distutils, lib2to3), GUIs and terminals (idlelib, tkinter, turtle, curses,
# readline), CPython's own tests and test extensions, and the modules for databases and
# services the operator has none of (sqlite3, dbm's C backends, crypt, nis, ossaudiodev).
# Taken out before ldd runs, so the shared libraries only they load (SQLite, Berkeley DB,
# ncurses, readline, Kerberos, libnsl/libtirpc: 6 MB) are not copied either. Kept although
# the operator does not load it: unittest (protobuf's test helpers name it).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --gid "${GID}" migrator \
 && useradd --uid "${UID}" --gid "${GID}" --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin migrator \
 && launcher="$(command -v "${PYTHON}")" \
 && interpreter="$(readlink -f "${launcher}")" \
 && stdlib="$("${PYTHON}" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && mkdir -p /rootfs/etc /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && for link in /bin /sbin /lib /lib64; do \
      if [ -L "${link}" ]; then cp -a "${link}" /rootfs/; fi; \
    done \
 && cp -a --parents -t /rootfs "${launcher}" "${interpreter}" "${stdlib}" /opt/venv \
      /etc/passwd /etc/group /etc/ld.so.cache \
 && if [ -d "/etc/${interpreter##*/}" ]; then cp -a --parents "/etc/${interpreter##*/}" /rootfs; fi \
 && copied_stdlib="/rootfs${stdlib}" \
 && rm -rf "${copied_stdlib}"/{ensurepip,distutils,lib2to3,idlelib,tkinter,turtledemo,curses,sqlite3} \
      "${copied_stdlib}"/{pydoc_data,test,site-packages,dist-packages} \
      "${copied_stdlib}"/{turtle,crypt}.py "${copied_stdlib}"/__pycache__/{turtle,crypt}.*.pyc \
      "${copied_stdlib}"/lib-dynload/{_test,_ctypes_test,_xxtestfuzz,_xxsubinterpreters,xxlimited}*.so \
      "${copied_stdlib}"/lib-dynload/{_tkinter,_curses,readline,_sqlite3,_dbm,_gdbm,_crypt,nis,ossaudiodev}*.so \
 && find "/rootfs${interpreter}" "/rootfs${stdlib}/lib-dynload" /rootfs/opt/venv -type f \
      \( -name '*.so' -o -name '*.so.*' -o -path "/rootfs${interpreter}" \) -print0 \
    | xargs -0 ldd 2>/dev/null \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(0x/ { print $1 }' \
      > /tmp/libraries \
 && ldconfig -p | awk '$1 == "libgcc_s.so.1" { print $NF }' >> /tmp/libraries \
 && while read -r library; do \
      echo "$(readlink -f "$(dirname "${library}")")/$(basename "${library}")"; \
      readlink -f "${library}"; \
    done < /tmp/libraries | sort -u > /tmp/runtime-files \
 && xargs cp -a --parents -t /rootfs < /tmp/runtime-files \
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
