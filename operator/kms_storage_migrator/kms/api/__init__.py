"""Generated KMS v2 API stubs (see scripts/regen-kms-stubs.sh)."""
