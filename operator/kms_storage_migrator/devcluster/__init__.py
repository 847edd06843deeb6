"""A local control plane: real etcd, kube-apiserver and the KMS v2 plugin on loopback."""
