"""The parts of a migration's status that are not counters: phases, failures, verification. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_FAILURES = 10
MAX_EXAMPLES = 10
MAX_MESSAGE = 300


class Phase(StrEnum):
    PENDING = "Pending"
    DISCOVERING = "Discovering"
    # Before any write: what could stop the migration, checked (preflight/, preflight_gate.py).
    PREFLIGHT = "Preflight"
    # Before any write: until every apiserver writes with the key the KMS reports (issue 9).
    WAITING_FOR_KEY = "WaitingForKey"
    SCANNING = "Scanning"
    MIGRATING = "Migrating"
    VERIFYING = "Verifying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED})
ACTIVE_PHASES = frozenset(
    {
        Phase.DISCOVERING,
        Phase.PREFLIGHT,
        Phase.WAITING_FOR_KEY,
        Phase.SCANNING,
        Phase.MIGRATING,
        Phase.VERIFYING,
    }
)


class ResourcePhase(StrEnum):
    PENDING = "Pending"
    MIGRATING = "Migrating"
    DONE = "Done"
    FAILED = "Failed"


class VerificationResult(StrEnum):
    VERIFIED = "Verified"  # etcd read back: nothing rewritable is stale
    STALE_FOUND = "StaleFound"
    UNVERIFIED = "Unverified"  # no etcd access


@dataclass(frozen=True)
class Failure:
    """One object the migration could not rewrite; names and reasons only, never data."""

    resource: str
    namespace: str
    name: str
    reason: str
    message: str

    def to_status(self) -> dict[str, str]:
        document = {"resource": self.resource, "name": self.name, "reason": self.reason}
        if self.namespace:
            document["namespace"] = self.namespace
        document["message"] = clip(self.message)
        return document

    @classmethod
    def from_status(cls, document: Mapping[str, Any]) -> Failure:
        return cls(
            resource=str(document.get("resource") or ""),
            namespace=str(document.get("namespace") or ""),
            name=str(document.get("name") or ""),
            reason=str(document.get("reason") or ""),
            message=str(document.get("message") or ""),
        )


@dataclass
class Verification:
    result: VerificationResult
    scanned: int = 0
    stale: int = 0
    examples: list[str] = field(default_factory=list)
    message: str = ""
    # KMS v2 key id -> objects still stored under it (key ids are not secret: etcd shows them).
    keys_in_use: dict[str, int] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        document: dict[str, Any] = {"result": self.result.value, "scanned": self.scanned, "stale": self.stale}
        if self.examples:
            document["examples"] = self.examples[:MAX_EXAMPLES]
        if self.keys_in_use:
            document["keysInUse"] = [
                {"keyId": key_id, "objects": count} for key_id, count in sorted(self.keys_in_use.items())
            ]
        if self.message:
            document["message"] = clip(self.message)
        return document

    @classmethod
    def from_status(cls, document: Mapping[str, Any]) -> Verification:
        return cls(
            result=VerificationResult(document.get("result") or VerificationResult.UNVERIFIED),
            scanned=to_int(document.get("scanned")),
            stale=to_int(document.get("stale")),
            examples=[str(e) for e in document.get("examples") or []],
            message=str(document.get("message") or ""),
            keys_in_use={
                str(entry.get("keyId")): to_int(entry.get("objects"))
                for entry in document.get("keysInUse") or []
            },
        )


def to_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
