from kms_storage_migrator.cli import main

raise SystemExit(main())
