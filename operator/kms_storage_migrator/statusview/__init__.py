"""``kms-storage-migrator status``: one StorageMigration as a table, once or live.

``model`` reads a StorageMigration object into plain values without trusting its shape,
``render`` turns those into rich renderables (both pure), ``command`` does the API calls.
"""
