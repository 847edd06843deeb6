"""The apiserver's Prometheus text -> which key each apiserver last got from Status and wrote with.

Two gauges of k8s.io/apiserver (envelope/metrics), both set to the apiserver's wall clock:

- ``apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{provider_name,
  key_id_hash, apiserver_id_hash}``: when a KMS v2 Status call last returned that key id.
- ``apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds{transformation_type,
  provider_name, key_id_hash, apiserver_id_hash}``: when that key id was last used;
  ``transformation_type="to_storage"`` is a write, ``from_storage`` a read.

A series for an old key stays until the label cache (100 label sets) evicts it, so "the key it
reports now" is the series with the newest timestamp, not merely a series that exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

STATUS_METRIC: Final = "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds"
USE_METRIC: Final = "apiserver_envelope_encryption_key_id_hash_last_timestamp_seconds"
# Set whenever an encryption configuration is loaded: it names the apiserver even when no KMS
# v2 key metric exists yet (no KMS provider, or no Status call succeeded).
CONFIG_INFO_METRIC: Final = "apiserver_encryption_config_controller_last_config_info"
TO_STORAGE: Final = "to_storage"
_METRICS: Final = (STATUS_METRIC, USE_METRIC, CONFIG_INFO_METRIC)


class MetricsFormatError(ValueError):
    """The /metrics answer is not Prometheus text the gate can read."""


@dataclass(frozen=True)
class KeySighting:
    """One key id hash and the apiserver-clock time (Unix seconds) it was last seen."""

    key_id_hash: str
    at: float


@dataclass(frozen=True)
class ProviderKeys:
    """What one apiserver reports for one KMS v2 provider of its encryption configuration."""

    provider_name: str
    latest_status: KeySighting | None  # the key id its newest Status call returned
    latest_write: KeySighting | None  # the key id its newest write (to_storage) used


@dataclass(frozen=True)
class ApiserverKeys:
    """The key observations of one apiserver, from one scrape of its /metrics."""

    apiserver_id_hash: str
    providers: tuple[ProviderKeys, ...]  # sorted by provider name


def relevant_lines(text: str) -> str:
    """Only the two gauges' lines: a big apiserver's /metrics is megabytes, these are a few lines."""
    kept = []
    for line in text.splitlines():
        body = line[7:] if line.startswith(("# HELP ", "# TYPE ")) else line
        if body.startswith(_METRICS):
            name = body.split("{", 1)[0].split(" ", 1)[0]
            if name in _METRICS:
                kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


def parse_apiserver_keys(text: str) -> dict[str, ApiserverKeys]:
    """Per ``apiserver_id_hash``, the newest Status and write key of each provider in ``text``."""
    status: dict[tuple[str, str], KeySighting] = {}
    writes: dict[tuple[str, str], KeySighting] = {}
    configured: set[str] = set()
    try:
        families = list(text_string_to_metric_families(relevant_lines(text)))
    except ValueError as error:
        raise MetricsFormatError(f"/metrics is not Prometheus text format: {error}") from None
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == CONFIG_INFO_METRIC:
                configured.add(labels.get("apiserver_id_hash", ""))
                continue
            if sample.name == STATUS_METRIC:
                newest = status
            elif sample.name == USE_METRIC and labels.get("transformation_type") == TO_STORAGE:
                newest = writes
            else:
                continue
            where = (labels.get("apiserver_id_hash", ""), labels.get("provider_name", ""))
            sighting = KeySighting(labels.get("key_id_hash", ""), float(sample.value))
            if where not in newest or sighting.at > newest[where].at:
                newest[where] = sighting
    return _group(status, writes, configured)


def _group(
    status: dict[tuple[str, str], KeySighting],
    writes: dict[tuple[str, str], KeySighting],
    configured: set[str],
) -> dict[str, ApiserverKeys]:
    pairs: Iterable[tuple[str, str]] = sorted(set(status) | set(writes))
    providers: dict[str, list[ProviderKeys]] = {id_hash: [] for id_hash in configured}
    for id_hash, provider in pairs:
        providers.setdefault(id_hash, []).append(
            ProviderKeys(provider, status.get((id_hash, provider)), writes.get((id_hash, provider)))
        )
    return {
        id_hash: ApiserverKeys(id_hash, tuple(provider_keys)) for id_hash, provider_keys in providers.items()
    }
