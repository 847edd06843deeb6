"""What the user chose for writes a mutating admission webhook intercepts (spec.mutatingWebhooks)."""

from __future__ import annotations

from enum import StrEnum


class MutatingWebhookPolicy(StrEnum):
    """Whether resources a mutating admission webhook intercepts on UPDATE/PATCH are written."""

    REFUSE = "Refuse"  # a mutating webhook could change the object on our no-op write: skip it
    ALLOW = "Allow"  # the user accepts that risk: write them like any other resource
