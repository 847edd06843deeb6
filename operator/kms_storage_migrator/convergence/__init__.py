"""The key-convergence gate: wait until every live apiserver writes with the KMS's current key.

Pure pieces (``metrics``, ``identity``, ``gate``, ``keyids``) turn the apiservers' own metrics
and identity Leases into a verdict; ``scrape`` is the only module here that does I/O.
See docs/key-convergence.md for the facts (metric names, hashes, poll timing, RBAC) it rests on.
"""
