"""The read-only etcd reader: the only module that talks to etcd.

It wraps ``etcd3aio`` (async, grpc.aio, works on protobuf 7) behind a small interface of our
own, so the client can be swapped without touching callers. Scans are paged range reads pinned
to the revision of their first page; when etcd compacts that revision mid-scan, the scan resumes
after the last key it yielded, pinned to a newer revision. Nothing here ever writes to etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol, Self, TypeVar, cast
from urllib.parse import urlsplit

import grpc
import grpc.aio
from etcd3aio import Etcd3Client, EtcdConnectionError, EtcdError, EtcdTransientError, prefix_range_end
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from kms_storage_migrator.errors import UserError
from kms_storage_migrator.storage.keys import DEFAULT_ROOT, EtcdRoot

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "PAGE_BYTES",
    "EtcdConfig",
    "EtcdReader",
    "EtcdUnavailable",
    "KeyValue",
    "RawEntry",
    "etcd_root_flag",
    "namespace_names",
]

DEFAULT_PAGE_SIZE = 5000  # the most keys one range request asks for
PAGE_BYTES = 1024 * 1024  # target page size; well under gRPC's 4 MiB message limit
_FIRST_PAGE_SIZE = 500  # before the value sizes are known
DEFAULT_TIMEOUT_SECONDS = 10.0
_RETRY_ATTEMPTS = 4
_MIN_PAGE_SIZE = 1
_RANGES_AHEAD = 2  # ranges whose first page is read while an earlier range is still being read
# etcd counts every key left in a range on each paged request (the total it returns), so paging
# through one range of N keys costs O(N²): 200k keys read 2.3x slower in one range per resource
# than cut at namespaces. A range found holding more keys than this is cut at the namespaces.
LARGE_RANGE_KEYS = 5000


class RawEntry(NamedTuple):  # a tuple: built once per key, so it must be cheap
    key: bytes
    value: bytes
    mod_revision: int  # the object's resourceVersion


KeyValue = tuple[bytes, bytes]  # what scan_values yields per key: the cheapest page there is
_Page = TypeVar("_Page", list[RawEntry], list[KeyValue])


class EtcdUnavailable(UserError):
    """etcd did not answer (refused, unavailable, timed out) after the reader's own retries.

    An outage, worth waiting out; unlike a refused certificate, which no retry fixes.
    """


def _failure(display: str, error: BaseException) -> UserError:
    """The one-line error for a failed request: an outage or a problem to fix."""
    kind = EtcdUnavailable if _is_transient(error) else UserError
    return kind(f"etcd at {display}: {_cause(error)}")


def etcd_root_flag(text: str) -> EtcdRoot:
    """``--etcd-prefix``: the one parser every command uses, so ``/`` means the same everywhere."""
    try:
        return EtcdRoot.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Where etcd is and how to authenticate to it (mTLS)."""

    endpoints: tuple[str, ...]
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS  # per request

    @classmethod
    def from_file(cls, path: Path, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> EtcdConfig:
        """Read ``{"endpoints": [...], "cacert": ..., "cert": ..., "key": ...}``; relative paths are
        resolved against the file's folder."""
        try:
            document = json.loads(path.read_text())
        except OSError as error:
            raise UserError(f"cannot read the etcd config {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise UserError(
                f"the etcd config {path} is not JSON: {error.msg} at line {error.lineno}"
            ) from None
        if not isinstance(document, dict):
            raise UserError(f"the etcd config {path} must be a JSON object with an 'endpoints' list")
        endpoints = document.get("endpoints")
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not isinstance(endpoints, list) or not endpoints or not all(isinstance(e, str) for e in endpoints):
            raise UserError(f"the etcd config {path} needs 'endpoints': a non-empty list of URLs")

        def file_field(name: str) -> Path | None:
            value = document.get(name)
            if value is None:
                return None
            if not isinstance(value, str):
                raise UserError(f"'{name}' in the etcd config {path} must be a file path")
            return path.parent / value

        return cls(
            tuple(endpoints), file_field("cacert"), file_field("cert"), file_field("key"), timeout=timeout
        )

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser, *, prefix_env: str | None = None) -> None:
        """The etcd flags of every command, ``--etcd-prefix`` included (its default may come
        from the variable ``prefix_env``, as in a pod)."""
        group = parser.add_argument_group("etcd (read-only access)")
        group.add_argument(
            "--etcd-config", type=Path, metavar="FILE", help="etcd.json: endpoints, cacert, cert, key"
        )
        group.add_argument(
            "--etcd-endpoints", metavar="URLS", help="comma-separated, e.g. https://127.0.0.1:2379"
        )
        group.add_argument(
            "--etcd-cacert", type=Path, metavar="FILE", help="CA bundle that signed etcd's cert"
        )
        group.add_argument("--etcd-cert", type=Path, metavar="FILE", help="client certificate (PEM)")
        group.add_argument("--etcd-key", type=Path, metavar="FILE", help="client private key (PEM)")
        group.add_argument(
            "--etcd-timeout",
            type=float,
            default=DEFAULT_TIMEOUT_SECONDS,
            metavar="SECONDS",
            help=f"per-request timeout (default {DEFAULT_TIMEOUT_SECONDS:g})",
        )
        from_env = f"env {prefix_env}; " if prefix_env else ""
        group.add_argument(
            "--etcd-prefix",
            type=etcd_root_flag,
            default=(os.environ.get(prefix_env) if prefix_env else None) or str(DEFAULT_ROOT),
            metavar="PATH",
            help=f"the apiserver's --etcd-prefix ({from_env}default {DEFAULT_ROOT})",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EtcdConfig:
        flags = (args.etcd_endpoints, args.etcd_cacert, args.etcd_cert, args.etcd_key)
        if args.etcd_config is not None:
            if any(flag is not None for flag in flags):
                raise UserError("give either --etcd-config or the --etcd-* flags, not both")
            return cls.from_file(args.etcd_config, timeout=args.etcd_timeout)
        if args.etcd_endpoints is None:
            raise UserError(
                "say where etcd is: --etcd-config FILE, or --etcd-endpoints with --etcd-cacert/cert/key"
            )
        endpoints = tuple(part.strip() for part in args.etcd_endpoints.split(",") if part.strip())
        if not endpoints:
            raise UserError("--etcd-endpoints is empty; give e.g. https://127.0.0.1:2379")
        return cls(endpoints, args.etcd_cacert, args.etcd_cert, args.etcd_key, timeout=args.etcd_timeout)

    @property
    def display(self) -> str:
        return ",".join(self.endpoints)


@dataclass(frozen=True, slots=True)
class _Target:
    addresses: list[str]  # ip:port, what etcd3aio's ipv4: target accepts
    server_name: str | None  # the host name to verify etcd's certificate against
    tls: bool


def _resolve_endpoints(endpoints: Sequence[str]) -> _Target:
    """etcd3aio dials ``ipv4:<ip:port,...>``; resolve names here and verify TLS against the name."""
    addresses: list[str] = []
    server_name: str | None = None
    schemes: set[str] = set()
    for endpoint in endpoints:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        schemes.add(url.scheme)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise UserError(f"etcd endpoint {endpoint!r} is not a URL like https://127.0.0.1:2379")
        try:
            port = url.port or 2379
        except ValueError:
            raise UserError(f"etcd endpoint {endpoint!r} has an invalid port") from None
        host = url.hostname
        try:
            address = str(ipaddress.IPv4Address(host))
        except ValueError:
            address = _resolve_ipv4(host, endpoint)
            server_name = server_name or host
        addresses.append(f"{address}:{port}")
    if len(schemes) > 1:
        raise UserError("etcd endpoints mix http:// and https://; use one scheme")
    return _Target(addresses, server_name, "https" in schemes)


def _resolve_ipv4(host: str, endpoint: str) -> str:
    try:
        infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UserError(f"cannot resolve etcd endpoint {endpoint}: {error.strerror}") from None
    return str(infos[0][4][0])


def _read_pem(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {flag} {path}: {error.strerror}") from None
    if b"-----BEGIN" not in data:
        raise UserError(f"{flag} {path} is not a PEM file")
    return data


def _is_compacted(error: BaseException) -> bool:
    return (
        isinstance(error, grpc.aio.AioRpcError)
        and error.code() == grpc.StatusCode.OUT_OF_RANGE
        and "compacted" in (error.details() or "")
    )


def _is_too_large(error: BaseException) -> bool:
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    # etcd3aio maps UNAVAILABLE / DEADLINE_EXCEEDED to these after its own (single) attempt.
    return isinstance(error, EtcdConnectionError | EtcdTransientError | TimeoutError)


def _cause(error: BaseException) -> str:
    """One line saying why a request failed, from gRPC's status details (never from values)."""
    text = str(error)
    if isinstance(error, grpc.aio.AioRpcError):
        text = f"{error.code().name}: {error.details() or ''}"
    elif isinstance(error.__cause__, grpc.aio.AioRpcError):
        text = f"{error.__cause__.code().name}: {error.__cause__.details() or ''}"
    lowered = text.lower()
    if "connection refused" in lowered:
        return "connection refused (is etcd running and listening there?)"
    if "socket closed" in lowered:
        return "etcd closed the connection (https vs http mismatch, or a proxy in the way?)"
    if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered or "tls" in lowered:
        return "TLS handshake failed (check --etcd-cacert, --etcd-cert and --etcd-key)"
    if "deadline" in lowered or isinstance(error, TimeoutError):
        return "timed out (raise --etcd-timeout or check the network)"
    if "permission" in lowered or "unauthenticated" in lowered:
        return "permission denied (the client certificate is not allowed to read)"
    return " ".join(text.split())[:300]


@dataclass(slots=True)
class _ScanState:
    """What the ranges of one scan share."""

    limit: int  # keys per request, sized from the pages seen so far
    revision: int = 0  # the revision read at: 0 until the first page, and again after a compaction


@dataclass(slots=True)
class _RangeCursor:
    """One sub-range of a scan: where it reads next, and its request in flight."""

    low: bytes
    high: bytes
    pending: asyncio.Task[Any] | None = None
    # Where the range began (a resource's prefix) while it may still be cut at namespaces: its
    # first answer says how many keys it holds. None once cut, or known small.
    origin: bytes | None = None

    def discard(self) -> None:
        """Drop the request in flight (its answer, or its error, is not wanted)."""
        if self.pending is not None:
            if self.pending.done() and not self.pending.cancelled():
                self.pending.exception()  # retrieved, so asyncio does not log it as lost
            self.pending.cancel()
            self.pending = None


class KeyLister(Protocol):
    """What :func:`namespace_names` needs of a reader (EtcdReader, or a test's stand-in)."""

    def scan(
        self, prefix: bytes | str, page_size: int = ..., *, keys_only: bool = ...
    ) -> AsyncIterator[list[RawEntry]]: ...


async def namespace_names(reader: KeyLister, root: EtcdRoot = DEFAULT_ROOT) -> list[bytes]:
    """Every namespace's name, from its etcd key (keys only): where large ranges are cut."""
    prefix = root.location("namespaces").encode()
    names: list[bytes] = []
    async for page in reader.scan(prefix, DEFAULT_PAGE_SIZE, keys_only=True):
        names += [entry.key[len(prefix) :] for entry in page]
    return names


def _cut_at_namespaces(cursors: deque[_RangeCursor], namespaces: Sequence[bytes]) -> None:
    """Cut the rest of the first range at ``<origin><namespace>/``, the parts lined up in order.

    Any sorted cuts partition the keys, so each is still read once and in order; namespaces
    only make the parts small for the resources whose keys are ``<prefix><namespace>/<name>``.
    """
    cursor = cursors[0]
    assert cursor.origin is not None
    cuts = sorted({cursor.origin + name + b"/" for name in namespaces})
    cuts = [cut for cut in cuts if cursor.low < cut < cursor.high]
    if not cuts:
        return
    parts = [_RangeCursor(low, high) for low, high in zip(cuts, [*cuts[1:], cursor.high], strict=True)]
    cursor.high = cuts[0]
    for position, part in enumerate(parts, start=1):
        cursors.insert(position, part)


def _next_limit(page: Sequence[tuple[bytes, bytes] | RawEntry], page_size: int) -> int:
    """Keys to ask for next so that a page stays near PAGE_BYTES."""
    average = sum(len(entry[0]) + len(entry[1]) for entry in page) // len(page) + 1
    return max(_MIN_PAGE_SIZE, min(page_size, PAGE_BYTES // average))


# What a page is made of, from etcd's KeyValue messages. Reading a field of a protobuf message
# copies it into a new Python object, so each reader asks only for what its callers use.
def _raw_entries(kvs: Any) -> list[RawEntry]:
    return [RawEntry(kv.key, kv.value, kv.mod_revision) for kv in kvs]


def _key_values(kvs: Any) -> list[KeyValue]:
    return [(kv.key, kv.value) for kv in kvs]


class EtcdReader:
    """Read-only access to etcd. Use as ``async with EtcdReader(config) as reader:``."""

    def __init__(self, config: EtcdConfig) -> None:
        self._config = config
        self._client: Etcd3Client | None = None
        self.compaction_restarts = 0  # how often a scan moved to a newer revision
        self.revision = 0  # the revision the latest scan page was read at

    @property
    def display(self) -> str:
        """The endpoints, for messages."""
        return self._config.display

    async def __aenter__(self) -> Self:
        target = _resolve_endpoints(self._config.endpoints)
        tls: dict[str, bytes | None] = {}
        if target.tls:
            ca = _read_pem(self._config.cacert, "--etcd-cacert")
            if ca is None:
                raise UserError(
                    f"etcd at {self._config.display} uses https: give --etcd-cacert (or 'cacert')"
                )
            tls = {
                "ca_cert": ca,
                "cert_chain": _read_pem(self._config.cert, "--etcd-cert"),
                "cert_key": _read_pem(self._config.key, "--etcd-key"),
            }
        # Our own tenacity policy does the retrying; one attempt each inside the client.
        self._client = Etcd3Client(
            target.addresses, rpc_max_attempts=1, tls_server_name=target.server_name, **tls
        )
        await self._client.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _range(self, start: bytes, end: bytes | None, **options: Any) -> Any:
        if self._client is None or self._client.kv is None:
            raise RuntimeError("EtcdReader used outside 'async with'")
        kv = self._client.kv
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_transient),
                stop=stop_after_attempt(_RETRY_ATTEMPTS),
                wait=wait_random_exponential(multiplier=0.2, max=3),
                reraise=True,
            ):
                with attempt:
                    return await kv.get(start, end, timeout=self._config.timeout, **options)
        except (EtcdError, TimeoutError) as error:
            raise _failure(self._config.display, error) from None
        except grpc.aio.AioRpcError as error:
            if _is_compacted(error) or _is_too_large(error):
                raise
            raise _failure(self._config.display, error) from None
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def probe_write(self, key: str, value: bytes) -> bool:
        """Whether this user may write, asked without writing: a Txn that puts ``key`` only if
        its value already equals ``value``. Only for a random ``key`` that never exists (the
        preflight probe, preflight/etcd_probe.py), so the compare fails and nothing is written:
        etcd checks the permission of every operation before it evaluates the compare.

        One attempt; errors are the caller's to read (permission denied is the answer wanted).
        Returns whether the compare held, which for an absent key it never does.
        """
        if self._client is None or self._client.kv is None:
            raise RuntimeError("EtcdReader used outside 'async with'")
        kv = self._client.kv
        compare = kv.txn_compare_value(key, value)
        put = kv.txn_op_put(key, value)
        response = await kv.txn([compare], [put], timeout=self._config.timeout, max_attempts=1)
        return bool(response.succeeded)

    async def get(self, key: bytes | str) -> RawEntry | None:
        """One key at the latest revision (for read-back verification), or None if absent."""
        raw_key = key.encode() if isinstance(key, str) else key
        response = await self._range(raw_key, None)
        if not response.kvs:
            return None
        kv = response.kvs[0]
        return RawEntry(bytes(kv.key), bytes(kv.value), int(kv.mod_revision))

    async def count(self, prefix: bytes | str) -> int:
        """How many keys start with ``prefix`` (cheap: no values travel)."""
        start = prefix.encode() if isinstance(prefix, str) else prefix
        response = await self._range(start, prefix_range_end(start), count_only=True)
        return int(response.count)

    def scan(
        self,
        prefix: bytes | str,
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        keys_only: bool = False,
        require_keys: bool = False,
        split_at: Iterable[bytes] = (),
        start_after: bytes | None = None,
        namespaces: Sequence[bytes] = (),
    ) -> AsyncIterator[list[RawEntry]]:
        """Yield every key under ``prefix`` in key order, one page at a time.

        Pages are pinned to the revision of the first page, so the scan is one consistent
        snapshot unless etcd compacts that revision meanwhile; then the scan continues after
        the last yielded key at the newest revision (each key is still yielded exactly once).

        Pages hold at most ``page_size`` keys and about PAGE_BYTES (sized from the values seen
        so far); while the caller works on one page, the next one and the first pages of the
        next _RANGES_AHEAD sub-ranges are already being read, so memory holds four pages at
        most, however many keys there are. ``split_at`` keys cut the range into sub-ranges read
        in order: etcd counts every key left in a range on each request, so paging through
        many small ranges is far cheaper than through one big one. ``start_after`` resumes a
        scan after a key already processed. ``require_keys`` turns an empty prefix into a UserError.
        ``namespaces``: names to cut a range at (``<range start><namespace>/``) once its first
        answer shows more than LARGE_RANGE_KEYS keys; sub-ranges are read in order, with
        _RANGES_AHEAD of them read ahead, so key order and the memory bound stay.
        """
        return self._scan(
            _raw_entries,
            prefix,
            page_size,
            keys_only=keys_only,
            require_keys=require_keys,
            split_at=split_at,
            start_after=start_after,
            namespaces=namespaces,
        )

    def scan_values(
        self,
        prefix: bytes | str,
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        require_keys: bool = False,
        split_at: Iterable[bytes] = (),
        namespaces: Sequence[bytes] = (),
    ) -> AsyncIterator[list[KeyValue]]:
        """:meth:`scan` with each key as a ``(key, value)`` pair and no revision: for callers that
        only classify values (the inventory), which then pay for two fields per key, not three."""
        return self._scan(
            _key_values,
            prefix,
            page_size,
            keys_only=False,
            require_keys=require_keys,
            split_at=split_at,
            start_after=None,
            namespaces=namespaces,
        )

    async def _scan(
        self,
        convert: Callable[[Any], _Page],
        prefix: bytes | str,
        page_size: int,
        *,
        keys_only: bool,
        require_keys: bool,
        split_at: Iterable[bytes],
        start_after: bytes | None,
        namespaces: Sequence[bytes],
    ) -> AsyncIterator[_Page]:
        start = prefix.encode() if isinstance(prefix, str) else prefix
        end = prefix_range_end(start)
        shown = start.decode(errors="replace")
        origin = start  # where the first range begins, also when resumed further in
        if start_after is not None:
            start = max(start, start_after + b"\x00")
        bounds: list[bytes] = sorted({key for key in split_at if start < key < end})
        # Each range may be cut at namespaces from where it begins: the prefix, or a bound of
        # split_at (a resource's location in a scan of the whole root).
        ranges = iter(
            _RangeCursor(low, high, origin=first if namespaces else None)
            for low, high, first in zip([start, *bounds], [*bounds, end], [origin, *bounds], strict=True)
        )
        state = _ScanState(limit=min(max(page_size, _MIN_PAGE_SIZE), _FIRST_PAGE_SIZE))
        # The range being read first, then the ranges read ahead: a request for a page must
        # wait for the page before it, so reading the next ranges' first pages meanwhile keeps
        # etcd busy (and hides the round trips to ranges that turn out empty).
        cursors: deque[_RangeCursor] = deque()
        seen_keys = False
        try:
            while self._read_ahead(cursors, ranges, state, keys_only):
                cursor = cursors[0]
                try:
                    response = await cast("asyncio.Task[Any]", cursor.pending)
                except grpc.aio.AioRpcError as error:
                    cursor.pending = None
                    if _is_compacted(error):
                        self.compaction_restarts += 1
                        state.revision = 0  # read on from cursor.low at the newest revision
                        for ahead in cursors:
                            ahead.discard()  # read at the compacted revision; nothing yielded yet
                        continue
                    if _is_too_large(error) and state.limit > _MIN_PAGE_SIZE:
                        state.limit = max(state.limit // 2, _MIN_PAGE_SIZE)  # over gRPC's message limit
                        continue
                    raise _failure(self._config.display, error) from None
                cursor.pending = None
                if state.revision == 0:
                    state.revision = int(response.header.revision)
                self.revision = state.revision
                page = convert(response.kvs)
                if page:
                    seen_keys = True
                    state.limit = _next_limit(page, page_size)
                if response.more and page:
                    cursor.low = page[-1][0] + b"\x00"  # the smallest key after the last one seen
                    if cursor.origin is not None and int(response.count) > LARGE_RANGE_KEYS:
                        _cut_at_namespaces(cursors, namespaces)
                    cursor.origin = None
                else:
                    cursors.popleft()  # this range is done
                if page:
                    # Overlap etcd's work on the next pages with the caller's work on this one.
                    self._read_ahead(cursors, ranges, state, keys_only)
                    yield page
        finally:
            for cursor in cursors:
                cursor.discard()
        if require_keys and not seen_keys:
            raise UserError(
                f"etcd at {self._config.display} has no keys under {shown!r}; "
                "is this the etcd of a kube-apiserver, and is the prefix right?"
            )

    def _read_ahead(
        self,
        cursors: deque[_RangeCursor],
        ranges: Iterator[_RangeCursor],
        state: _ScanState,
        keys_only: bool,
    ) -> bool:
        """Line up the ranges to read next and give each a request in flight; False when done."""
        while len(cursors) <= _RANGES_AHEAD and (upcoming := next(ranges, None)) is not None:
            cursors.append(upcoming)
        # Until the first answer pins the revision, only the first range may read; then the first
        # 1 + _RANGES_AHEAD (a range cut at namespaces lines up more than that).
        for cursor in list(cursors)[: 1 + _RANGES_AHEAD if state.revision else 1]:
            if cursor.pending is None:
                cursor.pending = self._fetch(cursor, state, keys_only)
        return bool(cursors)

    def _fetch(self, cursor: _RangeCursor, state: _ScanState, keys_only: bool) -> asyncio.Task[Any]:
        return asyncio.ensure_future(
            self._range(
                cursor.low, cursor.high, revision=state.revision, limit=state.limit, keys_only=keys_only
            )
        )
