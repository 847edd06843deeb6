"""The KMS v2 API (package ``v2``): api.proto and the stubs grpcio-tools generates from it."""
