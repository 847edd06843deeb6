"""kms-storage-migrator: re-encrypt everything etcd stores through KMS v2, and prove it."""

__version__ = "0.1.0"
