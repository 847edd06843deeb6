"""What "current" means once the apiservers converged: the key their KMS Status reports. Pure.

Format learning reads one write back; the gate reads every apiserver's metrics. Where they
disagree (a write landed on an apiserver before it switched, a rotation during the run) the
converged key wins: a format under any other KMS key is not what the apiservers write now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kms_storage_migrator.convergence.keyids import key_id_hash
from kms_storage_migrator.storage.formats import FormatKind
from kms_storage_migrator.storage.write_format import WriteFormat


@dataclass(frozen=True)
class Reconciled:
    expected: WriteFormat | None  # None: no known format carries the converged key (unverifiable)
    note: str = ""  # set when the learnt format was overruled


def converged_key(fmt: WriteFormat | None, converged: Mapping[str, str]) -> bool | None:
    """Whether ``fmt`` is under the key the apiservers converged on (None: the gate says nothing)."""
    if fmt is None or fmt.expected.kind is not FormatKind.KMS_V2 or not converged:
        return None
    provider, key_id = fmt.expected.provider, fmt.expected.key_id
    wanted = converged.get(provider) if provider is not None else None
    if wanted is None or key_id is None:
        return None
    return key_id_hash(key_id) == wanted


def reconcile(
    name: str, learnt: WriteFormat | None, reference: WriteFormat | None, converged: Mapping[str, str]
) -> Reconciled:
    """The format ``name``'s objects must have: the learnt one unless the converged key says otherwise."""
    if converged_key(learnt, converged) is not False:
        return Reconciled(learnt)
    assert learnt is not None  # converged_key answers False only for a KMS v2 format
    replacement = reference if converged_key(reference, converged) else None
    judged = f"judged against {replacement.label}" if replacement else "not verifiable"
    return Reconciled(
        replacement,
        f"{name}: a write read back as {learnt.label}, but every apiserver writes with another key "
        f"now: {judged}",
    )
