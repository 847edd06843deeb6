#!/usr/bin/env bash
# The real-node test (issue 13 part 2): the chart's pods on a kubelet node of the dev cluster.
#
#   sudo scripts/node-test.sh          # build what it needs, then run tests/node
#   sudo scripts/node-test.sh -k chart # pytest arguments go to pytest
#
# Not part of scripts/test.sh or CI: it needs root and builds kubelet, kube-scheduler and
# containerd (minutes on a cold machine, see docs/dev-cluster.md "A real node"). It builds
# (or finds cached) the node's binaries, builds the operator image with scripts/build-image.sh
# --local-base (reused when its inputs are unchanged), saves it as an OCI archive, and runs
# pytest on tests/node, which pytest collects only with KSM_NODE_TEST=1.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "node-test.sh: needs root (the node creates a bridge, iptables rules, cgroups and mounts)" >&2
    exit 1
fi
# A machine set up already keeps its .venv and binaries as they are; a fresh one is set up first.
if [[ ! -x .venv/bin/kms-storage-migrator ]]; then
    scripts/setup.sh
fi
missing=()
[[ -x /usr/sbin/runc ]] || missing+=(runc)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "==> installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "==> building (or finding cached) kubelet, kube-scheduler, kube-controller-manager, containerd, pause"
.venv/bin/kms-storage-migrator dev-cluster build \
    kubelet kube-scheduler kube-controller-manager containerd containerd-shim-runc-v2 ctr pause

echo "==> the operator image"
scripts/build-image.sh --local-base
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
podman --storage-driver vfs save --quiet --format oci-archive -o "$work/operator.tar" \
    localhost/kms-storage-migrator:dev

echo "==> pytest tests/node"
KSM_NODE_TEST=1 KSM_NODE_IMAGE_ARCHIVE="$work/operator.tar" .venv/bin/pytest tests/node -s "$@"
