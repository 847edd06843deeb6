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

# The HA dev cluster (`dev-cluster up --apiservers N`) puts HAProxy in front of its apiservers,
# as kubeadm HA setups do; Debian ships it. Installing needs root (CI runs as root).
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing haproxy from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  else
    echo "note: haproxy is missing; the HA dev cluster (--apiservers 2 or more) needs it: apt-get install haproxy"
  fi
fi

# promtool (Debian's prometheus package) checks and unit-tests the chart's alerting rules
# (tests/integration/test_monitoring.py). Only promtool is needed: where systemd started the
# package's Prometheus server (it listens on 9090, the operator's default metrics port), stop it.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing promtool (package prometheus) from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
      systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
  else
    echo "note: promtool is missing; the monitoring tests need it: apt-get install prometheus"
  fi
fi

echo "==> building (or finding cached) kube-apiserver, etcd, etcdctl, helm"
.venv/bin/kms-storage-migrator dev-cluster build kube-apiserver etcd etcdctl helm kubectl
