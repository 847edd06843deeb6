#!/usr/bin/env bash
# The fault suite (tests/integration/test_faults_*.py) at the sizes docs/reliability.md
# reports: 20,000 seeded objects, 5 operator kills per run, etcd away 60 s and 5 min.
# CI runs the same tests at small sizes through scripts/test.sh. Arguments go to pytest
# (e.g. `scripts/reliability.sh -k kills`); KSM_FAULT_SEED=<n> replays a run's kill times.
# Takes an hour or more on a two-core machine: each test starts its own dev cluster.
# test_faults_load.py alone seeds 100,000 objects and takes about 45 min a case (`-k load`
# runs only it; KSM_LOAD_OBJECTS=<n> another size).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "==> fault suite at full size"
KSM_FAULT_SCALE=full .venv/bin/pytest tests/integration/test_faults_*.py -s -v "$@"
