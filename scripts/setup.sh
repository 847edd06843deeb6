#!/usr/bin/env bash
# Everything a fresh machine needs before the demo or the tests: a virtualenv with the project
# and its dev extras from PyPI, and the dev cluster's binaries built from Go modules (cached
# per version under ~/.cache/kms-storage-migrator, so only the first run pays for the build).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
echo "==> installing the project and its dev extras into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

echo "==> building (or finding cached) kube-apiserver, etcd, etcdctl, helm"
.venv/bin/kms-storage-migrator dev-cluster build kube-apiserver etcd etcdctl helm kubectl
