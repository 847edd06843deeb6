"""The migration: discover, plan, rewrite, verify; progress to the StorageMigration status."""
