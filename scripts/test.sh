#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, static checks, then unit and integration
# tests. Integration tests start their own dev clusters (real etcd, kube-apiserver, KMS plugin).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "==> ruff"
.venv/bin/ruff check operator tests benchmarks
.venv/bin/ruff format --check operator tests benchmarks
echo "==> mypy"
.venv/bin/mypy
echo "==> generated KMS stubs are current"
scripts/regen-kms-stubs.sh
stubs=operator/kms_storage_migrator/kms/api
if [ -n "$(git status --porcelain -- "$stubs")" ]; then
  git status --short -- "$stubs"
  git diff -- "$stubs"
  echo "the committed KMS stubs differ from what scripts/regen-kms-stubs.sh generates: commit its output" >&2
  exit 1
fi

echo "==> pytest"
# Each test module on one of KSM_TEST_WORKERS workers, whole (its module-scoped dev cluster
# is started once); the integration tests mostly wait on real processes.
workers="${KSM_TEST_WORKERS:-2}"
if [ "$workers" -gt 1 ]; then
  .venv/bin/pytest -n "$workers" --dist loadfile "$@"
else
  .venv/bin/pytest "$@"
fi
