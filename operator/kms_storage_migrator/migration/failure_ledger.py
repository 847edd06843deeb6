"""The full list of objects a migration could not rewrite, bounded in bytes. Pure.

``status.failures`` keeps the first few; this keeps every one that fits under a byte cap well
below the 1 MiB a ConfigMap may hold, and counts the rest behind a "truncated" marker.

An entry holds names only: resource, namespace, name, reason, the HTTP code the reason stands
for, and the failure's message. The message is safe to keep because of where it comes from:
``kube.safe_message`` keeps only what the apiserver composes from names (Conflict, NotFound,
RBAC Forbidden), the field paths of an Invalid answer, a denying webhook's or policy's name, and
the fixed parts of a KMS error; every other apiserver text is dropped before it reaches a
Failure. The engine's own messages (CannotDecrypt, an undecodable value) name an etcd key and a
provider. Object data can reach none of them.

Stored as JSON Lines (one object per failure) because some resource types allow names with
spaces or tabs that a table could not keep apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from kms_storage_migrator.migration.status_parts import MAX_MESSAGE, Failure

# A ConfigMap holds at most 1 MiB in all; a quarter of it lists ~800 failures of 300 bytes.
DEFAULT_MAX_BYTES = 256 * 1024
LIST_KEY = "failures.jsonl"
SUMMARY_KEY = "summary"
TRUNCATED_KEY = "truncated"

# The HTTP code each Kubernetes Status reason is sent with (apimachinery's StatusReason
# docs), and our own reasons: a failure names its code without keeping the response.
_CODE_OF_REASON = {
    "BadRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "NotAcceptable": 406,
    "AlreadyExists": 409,
    "Conflict": 409,
    "Gone": 410,
    "RequestEntityTooLarge": 413,
    "UnsupportedMediaType": 415,
    "Invalid": 422,
    "TooManyRequests": 429,
    "InternalError": 500,
    "StorageReadError": 500,  # an undecodable stored value (the list answer's reason)
    "CannotDecrypt": 500,  # the engine's name for an encrypted value the apiserver answers 500 for
    "ServiceUnavailable": 503,
    "Timeout": 504,
}


def http_code(reason: str) -> int | None:
    """The HTTP code a failure's reason stands for; ``HTTP403`` is kube.py's reason for a bare 403."""
    if reason.startswith("HTTP") and reason[4:].isdigit():
        return int(reason[4:])
    return _CODE_OF_REASON.get(reason)


@dataclass(frozen=True)
class LedgerEntry:
    resource: str
    namespace: str
    name: str
    reason: str
    code: int | None
    message: str

    @classmethod
    def of(cls, failure: Failure) -> LedgerEntry:
        message = (
            failure.message
            if len(failure.message) <= MAX_MESSAGE
            else failure.message[: MAX_MESSAGE - 1] + "…"
        )
        return cls(
            failure.resource,
            failure.namespace,
            failure.name,
            failure.reason,
            http_code(failure.reason),
            message,
        )

    @property
    def identity(self) -> tuple[str, str, str]:
        return self.resource, self.namespace, self.name

    def to_line(self) -> str:
        document: dict[str, object] = {"resource": self.resource}
        if self.namespace:
            document["namespace"] = self.namespace
        document["name"] = self.name
        document["reason"] = self.reason
        if self.code is not None:
            document["code"] = self.code
        if self.message:
            document["message"] = self.message
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_line(cls, line: str) -> LedgerEntry | None:
        """An entry this module wrote, or None for anything else (a hand-edited line)."""
        try:
            document = json.loads(line)
        except ValueError:
            return None
        if not isinstance(document, dict) or not document.get("resource") or not document.get("name"):
            return None
        code = document.get("code")
        return cls(
            resource=str(document["resource"]),
            namespace=str(document.get("namespace") or ""),
            name=str(document["name"]),
            reason=str(document.get("reason") or ""),
            code=code if isinstance(code, int) else None,
            message=str(document.get("message") or ""),
        )


class FailureLedger:
    """Every failure once (a page redone after an outage records its failures again), in order."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._lines: list[str] = []
        self._listed: set[tuple[str, str, str]] = set()
        self._bytes = 0
        self.not_listed = 0  # failures past the cap: counted, not named
        self.version = 0  # moves at every change, so a writer knows when to write again

    @property
    def listed(self) -> int:
        return len(self._lines)

    def add(self, failure: Failure) -> bool:
        """Keep ``failure``; False when it was already listed."""
        return self._add(LedgerEntry.of(failure))

    def _add(self, entry: LedgerEntry) -> bool:
        if entry.identity in self._listed:
            return False
        line = entry.to_line()
        size = len(line.encode()) + 1
        self.version += 1
        if self._bytes + size > self._max_bytes:
            # Past the cap the identity is not kept either: memory stays bounded too.
            self.not_listed += 1
            return True
        self._lines.append(line)
        self._listed.add(entry.identity)
        self._bytes += size
        return True

    def restore(self, data: Mapping[str, str]) -> None:
        """Take back a list written earlier (a migration resumed by a new operator): its entries
        come first, then those added since, each once."""
        added_since, not_listed = self._lines, self.not_listed
        self._lines, self._listed, self._bytes = [], set(), 0
        self.not_listed = not_listed + _leading_int(data.get(TRUNCATED_KEY) or "")
        for line in [*(data.get(LIST_KEY) or "").splitlines(), *added_since]:
            entry = LedgerEntry.from_line(line)
            if entry is not None:
                self._add(entry)

    def to_data(self, migration: str) -> dict[str, str | None]:
        """The ConfigMap's data; None removes a key (a merge patch) that no longer applies."""
        summary = (
            f"{self.listed} objects StorageMigration {migration} could not rewrite are listed in {LIST_KEY}"
        )
        truncated = None
        if self.not_listed:
            summary += f"; truncated: {self.not_listed} more not listed"
            truncated = (
                f"{self.not_listed} more not listed: the list stops at {self._max_bytes} bytes; "
                "failuresTotal in the StorageMigration's status counts every failure"
            )
        return {
            LIST_KEY: "".join(line + "\n" for line in self._lines),
            SUMMARY_KEY: summary,
            TRUNCATED_KEY: truncated,
        }


def _leading_int(text: str) -> int:
    digits = text.split(" ", 1)[0]
    return int(digits) if digits.isdigit() else 0
