"""What etcd holds: stored formats, key layout, and the read-only etcd reader."""
