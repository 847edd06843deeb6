"""Objects etcd holds that the apiserver cannot decode, met by a Full walk, and the way past them.

A list page that reaches such a value fails as a whole (500 StorageReadError naming its etcd
key) and offers no continue token, so without help one bad value hides every object after it
from a walk that has only the API. The walk narrows the page until the failing object is the
first one, then resumes right after its key with a continue token in the apiserver's own
``meta.k8s.io/v1`` format (base64url JSON of a revision and the key to start from; the
apiserver checks the format and that the key stays inside the listed resource). The object
itself is reported, never written: nothing can read it, so a write could only destroy it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

CONTINUE_FORMAT = "meta.k8s.io/v1"


@dataclass(frozen=True)
class Unreadable:
    """A stored object the apiserver cannot decode, as a list met it."""

    namespace: str | None
    name: str
    etcd_key: str

    @property
    def list_key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def unreadable_object(etcd_key: str, *, namespaced: bool) -> Unreadable:
    """The object an etcd key names: ``.../<namespace>/<name>`` or ``.../<name>``."""
    parts = etcd_key.rstrip("/").split("/")
    if namespaced and len(parts) >= 2:
        return Unreadable(parts[-2], parts[-1], etcd_key)
    return Unreadable(None, parts[-1], etcd_key)


def token_after(list_key: str, revision: int) -> str:
    """A continue token that lists, at ``revision``, the objects after ``list_key``."""
    # "\x00" is the smallest byte: the first key after list_key itself.
    document = {"v": CONTINUE_FORMAT, "rv": revision, "start": f"{list_key}\x00"}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_revision(token: str | None) -> int | None:
    """The revision a continue token lists at, or None when it is not one we can read."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        document = json.loads(raw)
    except (ValueError, binascii.Error):
        return None
    revision = document.get("rv") if isinstance(document, dict) else None
    return revision if isinstance(revision, int) and revision > 0 else None
