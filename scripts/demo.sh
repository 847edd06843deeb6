#!/usr/bin/env bash
# The main job, from a fresh machine: a local control plane holding legacy plaintext data,
# switched to KMS v2, then the operator migrates everything while `kubectl get
# storagemigrations -w` shows it live, and the etcd scan proves nothing is left stale.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

dir=${DEMO_DIR:-.devcluster}
objects=${DEMO_OBJECTS:-3000}
ksm=.venv/bin/kms-storage-migrator
kubectl() { .venv/bin/kubectl --kubeconfig "$dir/kubeconfig" "$@"; }

echo "==> a legacy cluster that stores plaintext, in $dir"
$ksm dev-cluster down --dir "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
$ksm dev-cluster up --dir "$dir" --encryption none
echo "==> seeding $objects objects (core, apps, RBAC, custom resources)"
$ksm dev-cluster seed --dir "$dir" --objects "$objects" >/dev/null
echo "==> switching the apiserver to KMS v2 (old data stays plaintext until rewritten)"
$ksm dev-cluster encrypt --dir "$dir"
echo "==> what etcd holds now"
$ksm scan --etcd-config "$dir/etcd.json" --kubeconfig "$dir/kubeconfig" || true

echo "==> installing the StorageMigration CRD and starting the operator"
kubectl apply -f crds/storagemigrations.yaml
# Polled rather than `kubectl wait`, which was seen to exit 1 at once right after an apply.
established() {
  kubectl get crd storagemigrations.kms-storage-migrator.io \
    -o "jsonpath={.status.conditions[?(@.type=='Established')].status}" 2>/dev/null
}
for _ in $(seq 300); do [ "$(established)" = True ] && break; sleep 0.2; done
[ "$(established)" = True ] || { echo "the StorageMigration CRD did not become Established" >&2; exit 1; }
$ksm run --kubeconfig "$dir/kubeconfig" --etcd-config "$dir/etcd.json" --metrics-port 0 \
  >"$dir/logs/operator.log" 2>&1 &
operator=$!
watcher=
trap 'kill "$operator" $watcher 2>/dev/null || true' EXIT

kubectl apply -f examples/storagemigration.yaml
echo "==> kubectl get storagemigrations -w (until the migration finishes)"
kubectl get storagemigrations -w &
watcher=$!
phase=
for _ in $(seq 1800); do
  phase=$(kubectl get storagemigration encrypt-everything -o jsonpath='{.status.phase}')
  case "$phase" in Succeeded|Failed) break ;; esac
  if ! kill -0 "$operator" 2>/dev/null; then
    echo "the operator exited; its log: $dir/logs/operator.log" >&2
    exit 1
  fi
  sleep 1
done
sleep 1
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
if [ "$phase" != Succeeded ]; then
  echo "the migration ended ${phase:-without finishing}:" >&2
  kubectl describe storagemigration encrypt-everything >&2
  exit 1
fi

echo "==> what etcd holds after the migration"
$ksm scan --etcd-config "$dir/etcd.json" --kubeconfig "$dir/kubeconfig" --fail-on-stale
echo
echo "The dev cluster is still running: export KUBECONFIG=$dir/kubeconfig"
echo "Stop it with: $ksm dev-cluster down --dir $dir"
