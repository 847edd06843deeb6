"""The etcd side of preflight: reach and prefix, and the write question asked without writing.

Judged in ``findings.py`` (reach, prefix) and ``etcd_access.py`` (read-only). The write question
needs a Txn, the one the reader sends (``EtcdReader.probe_write``); it can never
write (see ``etcd_access.py``), because its key is random and never exists.
"""

from __future__ import annotations

import uuid

import grpc
import grpc.aio
from etcd3aio import (
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdTransientError,
)

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.preflight.etcd_access import WriteAnswer, judge_etcd_write, probe_key
from kms_storage_migrator.preflight.findings import Finding, etcd_unreachable, judge_etcd
from kms_storage_migrator.storage.etcd import EtcdReader, EtcdUnavailable
from kms_storage_migrator.storage.keys import EtcdRoot

NEVER_STORED = b"x"  # compared with a key that does not exist: etcd always fails that compare


async def check_reach(reader: EtcdReader, root: EtcdRoot) -> Finding:
    """Raises EtcdUnavailable when etcd does not answer: an outage, for the caller to wait out."""
    try:
        namespaces = await reader.count(root.location("namespaces"))
    except EtcdUnavailable:
        raise
    except UserError as error:
        return etcd_unreachable(reader.display, str(error))
    return judge_etcd(reader.display, root.path, namespaces)


async def check_read_only(reader: EtcdReader, root: EtcdRoot) -> Finding:
    """Raises EtcdUnavailable when etcd does not answer, as check_reach does."""
    answer, error = await ask_write(reader, probe_key(root.path, uuid.uuid4().hex))
    return judge_etcd_write(reader.display, answer, error)


async def ask_write(reader: EtcdReader, key: str) -> tuple[WriteAnswer, str]:
    """Would etcd let this user Put ``key``? A Txn whose compare fails, so nothing is written."""
    try:
        # The reader's own connection: the same user and certificate the migration reads with.
        written = await reader.probe_write(key, NEVER_STORED)
    except EtcdPermissionDeniedError:
        return WriteAnswer.DENIED, ""
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.PERMISSION_DENIED:
            return WriteAnswer.DENIED, ""
        if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise EtcdUnavailable(f"etcd at {reader.display}: {error.code().name}") from None
        return WriteAnswer.UNKNOWN, f"{error.code().name}: {error.details()}"
    except (EtcdConnectionError, EtcdTransientError, TimeoutError) as error:
        # No answer at all: an outage, waited out like any other etcd outage.
        raise EtcdUnavailable(f"etcd at {reader.display}: {type(error).__name__}: {error}") from None
    except EtcdError as error:
        if "permission denied" in str(error).lower():
            return WriteAnswer.DENIED, ""
        return WriteAnswer.UNKNOWN, f"{type(error).__name__}: {error}"
    if written:
        # Cannot happen for a random key; if it did, say so rather than call it a mere warning.
        return WriteAnswer.ALLOWED, f"the compare held and {key} was written"
    return WriteAnswer.ALLOWED, ""
