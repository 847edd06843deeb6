"""``run --auto-migrate``: the operator creates a StorageMigration itself after a KEK rotation.

``decision`` is the pure rule (given the converged key, the existing StorageMigrations and the
start scan: what to create, if anything); ``loop`` observes the cluster and carries it out.
See docs/key-convergence.md, "Automatic migration after a rotation".
"""
