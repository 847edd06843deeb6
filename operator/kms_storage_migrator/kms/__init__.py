"""A local KMS v2 plugin: a keyring of KEKs served over the kube-apiserver's gRPC API."""
