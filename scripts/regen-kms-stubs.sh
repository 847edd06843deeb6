#!/usr/bin/env bash
# Regenerates the committed Python stubs of the KMS v2 API from
# operator/kms_storage_migrator/kms/api/v2/api.proto.
#
# CI runs this and then `git diff --exit-code`: the output must be byte-identical to what is
# committed, so the generator version is pinned (grpcio-tools in pyproject's dev extras) and
# checked here. Protoc is run from the repository root with `-I operator`, so the generated
# gRPC module imports `from kms_storage_migrator.kms.api.v2 import api_pb2` (a package import)
# and the descriptor is registered under a name no other library uses.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

expected=$(sed -n 's/^ *"grpcio-tools==\([0-9.]*\)".*/\1/p' pyproject.toml)
actual=$("$python" -c 'from importlib.metadata import version; print(version("grpcio-tools"))' 2>/dev/null || true)
if [ -z "$actual" ]; then
  echo "regen-kms-stubs: grpcio-tools is not installed for $python; run: $python -m pip install -e '.[dev]'" >&2
  exit 1
fi
if [ -n "$expected" ] && [ "$actual" != "$expected" ]; then
  echo "regen-kms-stubs: grpcio-tools $actual is installed but pyproject pins $expected; the stubs would differ" >&2
  exit 1
fi

out=operator/kms_storage_migrator/kms/api/v2
rm -f "$out/api_pb2.py" "$out/api_pb2.pyi" "$out/api_pb2_grpc.py"
"$python" -m grpc_tools.protoc \
  -I operator \
  --python_out=operator \
  --pyi_out=operator \
  --grpc_python_out=operator \
  kms_storage_migrator/kms/api/v2/api.proto
echo "regen-kms-stubs: wrote $out/api_pb2.py, api_pb2.pyi, api_pb2_grpc.py (grpcio-tools $actual)"
