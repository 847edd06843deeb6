"""``kms-storage-migrator preflight``: what would stop a migration, checked before it writes."""
