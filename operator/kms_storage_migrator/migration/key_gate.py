"""The key-convergence gate as the engine sees it: wait, then say what the wait means.

No object may be rewritten (and none judged) before every live apiserver writes with the key
its latest KMS Status reported: a write through a lagging apiserver would store the old key
and be counted done. The waiting is ``convergence.scrape``; here the decision of what each
verdict means for the migration (pure) and the KeyConverged condition it shows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kms_storage_migrator.convergence.gate import Converged, GateResult, Lag, NoMetricsAccess, Waiting
from kms_storage_migrator.convergence.scrape import wait_for_convergence
from kms_storage_migrator.kube import KubeApi

KEY_CONVERGED = "KeyConverged"
NO_KMS_PROVIDER = "NoKmsProviderObserved"


class KeyGate(Protocol):
    """Waits until the apiservers converge on one key, or the time runs out."""

    async def wait(
        self,
        started_at: datetime,
        timeout_seconds: float,
        on_progress: Callable[[GateResult], Awaitable[None]],
    ) -> GateResult: ...


class ApiserverKeyGate:
    """The gate over the real apiservers' /metrics and identity Leases."""

    def __init__(self, api: KubeApi, *, nudge: bool = True) -> None:
        self._api = api
        # /readyz makes an apiserver poll Status when its last poll is over 20 s old: a single
        # apiserver converges in ~20 s instead of up to 60 s after the start.
        self._nudge = nudge

    async def wait(
        self,
        started_at: datetime,
        timeout_seconds: float,
        on_progress: Callable[[GateResult], Awaitable[None]],
    ) -> GateResult:
        async def report(result: GateResult) -> None:
            await on_progress(result)
            if no_kms_provider(result):
                raise _Settled(result)  # no KMS at all will not change by waiting

        try:
            return await wait_for_convergence(
                self._api, started_at, timeout_seconds, report, nudge=self._nudge
            )
        except _Settled as settled:
            return settled.result


class _Settled(Exception):
    def __init__(self, result: GateResult) -> None:
        super().__init__("settled")
        self.result = result


def keep_names(result: GateResult, last_named: Waiting | None) -> GateResult:
    """A final round that named nobody (a failed Lease list) keeps the laggards seen before.

    An apiserver whose KMS plugin is down cannot decrypt the (encrypted) Leases either, so a
    round answered by it names no one; the timeout message must still say who lags.
    """
    if not isinstance(result, Waiting) or result.lagging or last_named is None:
        return result
    notes = [note for note in (last_named.note, f"last round: {result.note}" if result.note else "") if note]
    return Waiting(last_named.lagging, note="; ".join(notes))


def no_kms_provider(result: GateResult) -> bool:
    """Every apiserver answered and none reports a KMS v2 provider: nothing to converge on."""
    return (
        isinstance(result, Waiting)
        and bool(result.lagging)
        and all(lag.reason is Lag.NO_KMS_METRICS for lag in result.lagging)
    )


@dataclass(frozen=True)
class GateOutcome:
    """What the engine does after the gate: go on (after ``wait_seconds``), or fail."""

    proceed: bool
    converged: bool  # the KeyConverged condition's status
    reason: str
    message: str
    wait_seconds: float = 0.0
    key_id_hashes: dict[str, str] | None = None


def decide_gate(result: GateResult, *, seconds_since_start: float, timeout_seconds: float) -> GateOutcome:
    """The meaning of the gate's final verdict for the migration. Pure."""
    if isinstance(result, Converged):
        hashes = dict(result.key_id_hashes)
        return GateOutcome(True, True, result.reason, result.message, key_id_hashes=hashes)
    if isinstance(result, NoMetricsAccess):
        # Blind: wait as long as two Status polls from the start take, then go on; verification
        # still judges every object against the key found in etcd.
        remaining = max(0.0, result.safe_wait_seconds - seconds_since_start)
        return GateOutcome(True, False, result.reason, result.message, wait_seconds=remaining)
    if no_kms_provider(result):
        return GateOutcome(
            True,
            True,
            NO_KMS_PROVIDER,
            "no KMS v2 provider observed on any apiserver: no key to wait for; verification judges "
            "what etcd holds",
        )
    return GateOutcome(
        False,
        False,
        result.reason,
        f"spec.keyConvergenceTimeout ({timeout_seconds:.0f} s) ran out: {result.message}. Check "
        "each named apiserver's KMS plugin, or raise spec.keyConvergenceTimeout",
    )


PREVIOUS_KEYS_IN_USE = "PreviousKeysInUse"


def previous_keys(keys_in_use: dict[str, int], current_key_id: str | None) -> tuple[bool, str, str]:
    """The PreviousKeysInUse condition: (status, reason, message). Pure.

    False only when no selected object remains under any KMS v2 key but the current one: then
    the older keys can be retired (disabled in the KMS) without losing an object.
    """
    older = {key_id: count for key_id, count in keys_in_use.items() if key_id != current_key_id}
    if not older:
        return (
            False,
            "OnlyCurrentKey",
            f"every selected object is under the current key {current_key_id or '(none)'}",
        )
    listed = ", ".join(f"{key_id}: {count}" for key_id, count in sorted(older.items()))
    return (
        True,
        "OlderKeysHoldObjects",
        f"{sum(older.values())} selected object(s) still under older keys ({listed}); keep those keys "
        "enabled in the KMS until a migration rewrites them",
    )
