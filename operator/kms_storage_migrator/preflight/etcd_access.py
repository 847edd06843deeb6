"""Is the operator's etcd user read-only? Asked without writing, judged here. Pure.

The question is an etcd Txn whose only compare can never hold (the value of a random key that
does not exist equals "x": etcd fails a value compare on a missing key) with a Put in its
success branch. etcd checks the permission of every operation of a Txn before it evaluates the
compare, so a read-only user is refused (permission denied) while a user who may write gets an
answer that the compare failed: nothing is written either way.
"""

from __future__ import annotations

from enum import StrEnum

from kms_storage_migrator.preflight.findings import ETCD_CHECK, Finding, Verdict

ETCD_WRITE_CHECK = f"{ETCD_CHECK} read-only"


class WriteAnswer(StrEnum):
    DENIED = "denied"  # permission denied: the user cannot write
    ALLOWED = "allowed"  # the Txn was evaluated: the user could have written
    UNKNOWN = "unknown"  # another error: no answer


def probe_key(root: str, token: str) -> str:
    """A key no one uses, under the apiserver's prefix (a read-only role covers exactly that)."""
    return f"{root}/kms-storage-migrator.io/preflight-write-probe-{token}"


def judge_etcd_write(display: str, answer: WriteAnswer, error: str = "") -> Finding:
    if answer is WriteAnswer.DENIED:
        return Finding(ETCD_WRITE_CHECK, Verdict.OK, f"{display}: the operator's etcd user cannot write")
    if answer is WriteAnswer.ALLOWED:
        return Finding(
            ETCD_WRITE_CHECK,
            Verdict.WARN,
            f"{display}: the operator's etcd user can write (a Txn that would write was accepted; "
            "its compare failed, so nothing was written)",
            "the etcd user can write; give it a read-only role (etcdctl role grant-permission <role> "
            "read --prefix <etcd prefix>) and enable etcd auth",
        )
    return Finding(
        ETCD_WRITE_CHECK,
        Verdict.WARN,
        f"{display}: cannot tell whether the operator's etcd user can write: {error}",
        "check etcd's answer above; the operator needs read access only",
    )
