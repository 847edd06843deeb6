"""The gate's rule, pure: are all live apiservers writing with the key their KMS reports now?

Converged when every live apiserver (identity Lease, see ``identity``) answered a scrape, has
polled KMS Status after the migration started, writes (``to_storage``) with the key id hash
that Status returned, and all of them agree per provider. Otherwise Waiting, naming each
lagging apiserver and what it writes with. Without ``get`` on /metrics, NoMetricsAccess: the
caller waits :data:`NO_METRICS_SAFE_WAIT_SECONDS` instead and says so.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final

from kms_storage_migrator.convergence.identity import ApiserverIdentity
from kms_storage_migrator.convergence.metrics import ApiserverKeys, KeySighting, ProviderKeys

# kube-apiserver polls KMS Status every 60 s while healthy (10 s after a failure), so two
# polls plus slack cover a rotation made just before the migration started.
STATUS_POLL_SECONDS: Final = 60.0
NO_METRICS_SAFE_WAIT_SECONDS: Final = 2 * STATUS_POLL_SECONDS + 30.0
# Hash labels are 71 characters; status and messages show a prefix long enough to tell keys apart.
SHORT_HASH: Final = 19
# A status condition's message stays readable on a big control plane: the rest is counted.
MAX_NAMED_APISERVERS: Final = 5


class Lag(enum.Enum):
    """Why one apiserver does not count as converged yet."""

    NOT_REACHED = "did not answer any /metrics scrape"
    NO_KMS_METRICS = "reports no KMS v2 key metrics"
    NO_WRITES = "has not written through a KMS v2 provider since it started"
    NO_STATUS_SINCE_START = "has not polled its KMS Status since the migration started"
    WRITES_OTHER_KEY = "does not write with the key its latest Status returned"
    DISAGREES = "reports another key than the other apiservers"


@dataclass(frozen=True)
class LaggingApiserver:
    """One apiserver holding the gate, and the key hashes it reports (None: unknown)."""

    apiserver_id: str
    reason: Lag
    provider_name: str | None = None
    status_key_id_hash: str | None = None
    write_key_id_hash: str | None = None

    def describe(self) -> str:
        text = f"{self.apiserver_id} {self.reason.value}"
        details = []
        if self.write_key_id_hash:
            details.append(f"writes with {short_hash(self.write_key_id_hash)}")
        if self.status_key_id_hash and self.status_key_id_hash != self.write_key_id_hash:
            details.append(f"latest Status {short_hash(self.status_key_id_hash)}")
        if self.provider_name and details:
            details.insert(0, f"provider {self.provider_name}")
        return f"{text} ({', '.join(details)})" if details else text


@dataclass(frozen=True)
class Converged:
    """Every live apiserver writes with the same key per provider: ``key_id_hashes[provider]``."""

    key_id_hashes: Mapping[str, str]
    apiservers: tuple[str, ...]

    @property
    def key_id_hash(self) -> str:
        """The converged key hash when the apiservers write through one KMS v2 provider."""
        if len(self.key_id_hashes) != 1:
            raise ValueError(
                f"the apiservers write through {len(self.key_id_hashes)} KMS v2 providers "
                f"({', '.join(sorted(self.key_id_hashes))}): ask key_id_hashes[provider]"
            )
        return next(iter(self.key_id_hashes.values()))

    reason: ClassVar[str] = "KeyConverged"

    @property
    def message(self) -> str:
        keys = ", ".join(f"{name} {short_hash(value)}" for name, value in sorted(self.key_id_hashes.items()))
        return f"all {len(self.apiservers)} apiservers write with the key their KMS reports ({keys})"


@dataclass(frozen=True)
class Waiting:
    """Not converged yet; ``lagging`` names who holds the gate (``note`` when no one can be named)."""

    lagging: tuple[LaggingApiserver, ...]
    note: str = ""
    reason: ClassVar[str] = "ApiserversLagging"

    @property
    def message(self) -> str:
        parts = [lag.describe() for lag in self.lagging[:MAX_NAMED_APISERVERS]]
        if len(self.lagging) > MAX_NAMED_APISERVERS:
            parts.append(f"and {len(self.lagging) - MAX_NAMED_APISERVERS} more")
        if self.note:
            parts.insert(0, self.note)
        return "waiting for the apiservers to use the KMS's current key: " + "; ".join(parts)


@dataclass(frozen=True)
class NoMetricsAccess:
    """/metrics answered 403: the gate cannot see which key the apiservers use."""

    detail: str
    safe_wait_seconds: float = field(default=NO_METRICS_SAFE_WAIT_SECONDS)
    reason: ClassVar[str] = "NoMetricsAccess"

    @property
    def message(self) -> str:
        return (
            f"cannot read the apiservers' /metrics ({self.detail}); grant get on nonResourceURLs "
            f'["/metrics"] to see which key each apiserver writes with. Waiting '
            f"{self.safe_wait_seconds:.0f} s (over two KMS Status polls) instead"
        )


# Each has ``reason`` (a condition reason) and ``message`` (a condition message, no secrets).
GateResult = Converged | Waiting | NoMetricsAccess


def short_hash(value: str) -> str:
    return value[:SHORT_HASH]


def assess(
    live: Sequence[ApiserverIdentity],
    answers: Mapping[str, Sequence[ApiserverKeys]],
    started_at: float,
    *,
    metrics_forbidden: str | None = None,
) -> GateResult:
    """The verdict on one round of scrapes.

    ``answers`` maps an ``apiserver_id_hash`` to every scrape that answered for it in this
    round (apiservers sharing a host share an identity, so one identity may answer several
    times, from different processes: each answer must pass). ``started_at`` is the migration's
    start in Unix seconds; a Status poll counts only when strictly after it.
    """
    if metrics_forbidden is not None:
        return NoMetricsAccess(metrics_forbidden)
    if not live:
        return Waiting((), note="no live kube-apiserver identity Lease in kube-system")
    lagging: list[LaggingApiserver] = []
    # provider -> status key hash -> apiservers whose answers passed on their own with it
    agreeing: dict[str, dict[str, set[str]]] = {}
    for identity in live:
        observations = answers.get(identity.id_hash, ())
        if not observations:
            lagging.append(LaggingApiserver(identity.apiserver_id, Lag.NOT_REACHED))
            continue
        own_lags = []
        for observation in observations:
            own_lags += _judge(identity.apiserver_id, observation, started_at, agreeing)
        lagging += _unique(own_lags)
    passed = {server for by_key in agreeing.values() for servers in by_key.values() for server in servers}
    late = {lag.apiserver_id for lag in lagging}
    for provider, by_key in sorted(agreeing.items()):
        if len(by_key) > 1:
            for key_hash, servers in sorted(by_key.items()):
                lagging += [
                    LaggingApiserver(server, Lag.DISAGREES, provider, key_hash, key_hash)
                    for server in sorted(servers - late)
                ]
    if lagging:
        return Waiting(tuple(lagging))
    keys = {provider: next(iter(by_key)) for provider, by_key in agreeing.items()}
    return Converged(keys, tuple(sorted(passed)))


def _judge(
    apiserver_id: str,
    observation: ApiserverKeys,
    started_at: float,
    agreeing: dict[str, dict[str, set[str]]],
) -> list[LaggingApiserver]:
    """Lags of one answer; providers that pass are recorded in ``agreeing``."""
    if not observation.providers:
        return [LaggingApiserver(apiserver_id, Lag.NO_KMS_METRICS)]
    # Only providers that write matter: a provider listed after the first one only decrypts.
    writers = [keys for keys in observation.providers if keys.latest_write is not None]
    if not writers:
        status = observation.providers[0].latest_status
        return [
            LaggingApiserver(
                apiserver_id,
                Lag.NO_WRITES,
                observation.providers[0].provider_name,
                status.key_id_hash if status else None,
            )
        ]
    lags = []
    for keys in writers:
        lag = _judge_provider(apiserver_id, keys, started_at)
        if lag is not None:
            lags.append(lag)
        else:
            status = _present(keys.latest_status)
            by_key = agreeing.setdefault(keys.provider_name, {})
            by_key.setdefault(status.key_id_hash, set()).add(apiserver_id)
    return lags


def _judge_provider(apiserver_id: str, keys: ProviderKeys, started_at: float) -> LaggingApiserver | None:
    status, write = keys.latest_status, _present(keys.latest_write)
    status_hash = status.key_id_hash if status else None
    if status is None or status.at <= started_at:
        return LaggingApiserver(
            apiserver_id, Lag.NO_STATUS_SINCE_START, keys.provider_name, status_hash, write.key_id_hash
        )
    if write.key_id_hash != status.key_id_hash:
        # Also the case of no write since the poll: the last write shows the old key until the next one.
        return LaggingApiserver(
            apiserver_id, Lag.WRITES_OTHER_KEY, keys.provider_name, status_hash, write.key_id_hash
        )
    return None


def _present(sighting: KeySighting | None) -> KeySighting:
    if sighting is None:  # pragma: no cover - callers pass only providers that have one
        raise ValueError("missing key sighting")
    return sighting


def _unique(lags: list[LaggingApiserver]) -> list[LaggingApiserver]:
    return list(dict.fromkeys(lags))
