"""The one Kubernetes API client: credentials, raw JSON over aiohttp, metadata-only requests.

Credentials come from a kubeconfig or the in-cluster service account through the official
``kubernetes`` package's loaders (blocking: at startup, and in a worker thread when a token is
renewed before expiry or after a 401); every request is async. Lists ask for
``PartialObjectMetadata`` so decrypted payloads (Secret data, ConfigMap data) do not reach this
process; kubectl's last-applied annotation, which may copy them into metadata, is dropped at
parse. Patch answers are, by default, a Table without the object: no metadata at all, only the
new resourceVersion, so a write never receives that annotation either.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config
from kubernetes.config import kube_config

from kms_storage_migrator.errors import UserError

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
# A single object as a Table, with includeObject=None: the apiserver sends printer-column cells
# and the Table's own metadata, whose resourceVersion is the object's (measured on 1.37.2: a
# re-encrypting patch moved it 212 -> 218, as stored), and no object metadata at all.
TABLE_OBJECT = "application/json;as=Table;g=meta.k8s.io;v=v1"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "kms-storage-migrator"
# Prometheus text format first: the apiserver would otherwise offer protobuf or OpenMetrics.
TEXT_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
# The apiserver's /metrics measured 3.7 MB on the dev cluster (65 resource types) and grows
# with resource types; callers expecting more pass their own bound.
MAX_TEXT_RESPONSE_BYTES = 32 * 1024 * 1024
# The in-cluster token is rotated by the kubelet; re-reading it this often keeps it valid
# (and a 401 forces a re-read before the next request, see KubeApi.request).
TOKEN_REREAD_SECONDS = 60.0
# A token with an expiry is replaced this long before it (or a quarter of its lifetime, if that
# is shorter), so no request is sent with a token about to lapse.
EXPIRY_MARGIN_SECONDS = 30.0
EXPIRY_MARGIN_FRACTION = 0.25
# A source that gave nothing new (a failing exec plugin) is not asked again sooner than this.
REFRESH_HOLD_SECONDS = 5.0
# Longest apiserver message kept on an ApiError (it may end up in status and events).
MAX_ERROR_MESSAGE = 300
# Status reasons whose message the apiserver writes itself from names, not object content.
SAFE_MESSAGE_REASONS = frozenset(
    {
        "Conflict",
        "NotFound",
        "AlreadyExists",
        "Forbidden",
        "Unauthorized",
        "Gone",
        "Expired",
        "MethodNotAllowed",
    }
)
# kubectl apply stores the whole applied manifest here, so a Secret's data comes along with its
# metadata (issue 10). Nothing this operator does needs it: it is dropped as soon as parsed.
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
# Core Secret paths (a collection or one object): where a dropped annotation held Secret data.
_SECRET_PATH = re.compile(r"^/api/v1/(?:namespaces/[^/]+/)?secrets(?:/|$)")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

logger = logging.getLogger(__name__)


class PatchAnswer(StrEnum):
    """What a patch answer carries."""

    # Only the new resourceVersion (a Table without the object): what the no-op write needs.
    TABLE = "table"
    # PartialObjectMetadata: labels, annotations, managedFields too (the last-applied
    # annotation is dropped at parse), for a caller that must see what admission changed.
    METADATA = "metadata"


@dataclass(frozen=True)
class BearerToken:
    """A bearer token and when it stops working (Unix time; None when nobody said)."""

    value: str = field(repr=False)
    expires_at: float | None = None


# Blocking (reads a file, runs an exec plugin); None when the source holds no token.
TokenSource = Callable[[], "BearerToken | None"]


@dataclass(frozen=True)
class ApiCredentials:
    """Where the apiserver is and how to prove who we are (paths, never secret values in logs)."""

    server: str
    ca_path: str | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    token: str | None = field(default=None, repr=False)
    token_path: str | None = None
    insecure: bool = False
    token_expires_at: float | None = None
    # How to get a fresh token: re-run the kubeconfig's exec plugin or OIDC refresh, re-read a
    # token file. None: the token is fixed.
    token_source: TokenSource | None = field(default=None, repr=False, compare=False)
    # Ask the source at least this often, even before expiry (the kubelet rotates files early).
    reread_seconds: float | None = None

    def describe(self) -> str:
        return self.server

    def fetch_token(self) -> BearerToken | None:
        """A fresh token from the source, blocking (kopf's sync login handler may call it)."""
        if self.token_source is None:
            return BearerToken(self.token, self.token_expires_at) if self.token else None
        return self.token_source()


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (OIDC id-tokens, ServiceAccount tokens), unverified; else None.

    Only used to schedule a refresh: the apiserver still judges the token.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError all are
        return None
    expiry = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(expiry, bool) or not isinstance(expiry, int | float):
        return None
    return float(expiry)


def refresh_due(
    expires_at: float | None, obtained_at: float, now: float, reread_seconds: float | None
) -> bool:
    """Whether a token obtained at ``obtained_at`` should be replaced before the next request."""
    if reread_seconds is not None and now - obtained_at >= reread_seconds:
        return True
    renew_at = renewal_time(expires_at, obtained_at)
    return renew_at is not None and now >= renew_at


def renewal_time(expires_at: float | None, obtained_at: float) -> float | None:
    """When a token that expires at ``expires_at`` should be replaced (Unix time), if it expires.

    Also the ``expiration`` to give kopf's ConnectionInfo, so kopf logs in again in time.
    """
    if expires_at is None:
        return None
    lifetime = max(0.0, expires_at - obtained_at)
    return expires_at - min(EXPIRY_MARGIN_SECONDS, lifetime * EXPIRY_MARGIN_FRACTION)


def _bearer_token(configuration: client.Configuration, expiry: Any = None) -> BearerToken | None:
    api_key = configuration.api_key or {}
    authorization = api_key.get("authorization") or api_key.get("BearerToken")
    if not authorization:
        return None
    value = str(authorization).removeprefix("Bearer ").strip()
    # An exec plugin's status.expirationTimestamp (parsed by the loader), else the JWT's own.
    expires_at = expiry.timestamp() if isinstance(expiry, datetime.datetime) else jwt_expiry(value)
    return BearerToken(value, expires_at)


class _KubeconfigAuthentication:
    """Runs the kubeconfig's authentication again: exec plugin, OIDC refresh, tokenFile read.

    The ``kubernetes`` loader does the work; it refreshes on its own only when the old token is
    past expiry, so a 401 (a revoked token, one without expiry) would never reach it.
    """

    def __init__(self, path: Path) -> None:
        merger = kube_config.KubeConfigMerger(str(path))
        if merger.config is None:
            raise config.ConfigException("no configuration found in the file")
        # Persisting keeps the loader's behaviour: a refreshed OIDC token is written back.
        self._loader = kube_config.KubeConfigLoader(
            config_dict=merger.config, config_base_path=None, config_persister=merger.save_changes
        )
        self._lock = threading.Lock()  # the loader is not thread-safe; kopf's login runs in a thread

    def load(self) -> tuple[client.Configuration, BearerToken | None]:
        with self._lock:
            configuration = client.Configuration()
            self._loader.load_and_set(configuration)
            return configuration, _bearer_token(configuration, getattr(self._loader, "expiry", None))

    def __call__(self) -> BearerToken | None:
        return self.load()[1]


class _TokenFile:
    """The in-cluster ServiceAccount token, rotated in place by the kubelet."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __call__(self) -> BearerToken | None:
        value = self._path.read_text().strip()
        return BearerToken(value, jwt_expiry(value)) if value else None


def load_credentials(kubeconfig: Path | None) -> ApiCredentials:
    """Load credentials from ``kubeconfig`` or, when it is None, from the in-cluster service account.

    Blocking (the loaders read files and may run exec plugins): call it once at startup.
    """
    source: TokenSource
    try:
        if kubeconfig is not None:
            if not kubeconfig.is_file():
                raise UserError(f"--kubeconfig {kubeconfig}: no such file")
            authentication = _KubeconfigAuthentication(kubeconfig)
            configuration, token = authentication.load()
            source, token_path, reread = authentication, None, None
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            token_path = str(SERVICE_ACCOUNT_DIR / "token")
            token = _bearer_token(configuration)
            source, reread = _TokenFile(Path(token_path)), TOKEN_REREAD_SECONDS
    except config.ConfigException as error:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise UserError(f"cannot load Kubernetes credentials from {where}: {error}") from error
    return ApiCredentials(
        server=configuration.host.rstrip("/"),
        ca_path=configuration.ssl_ca_cert,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token.value if token else None,
        token_path=token_path,
        insecure=not configuration.verify_ssl,
        token_expires_at=token.expires_at if token else None,
        token_source=source,
        reread_seconds=reread,
    )


class _TokenKeeper:
    """The token requests carry, refreshed before expiry and after a 401, one refresh at a time.

    A 401 condemns only the token that request carried (its generation): forty requests
    rejected together cause one refresh, not forty.
    """

    def __init__(self, credentials: ApiCredentials) -> None:
        self._source = credentials.token_source
        self._reread_seconds = credentials.reread_seconds
        self._token = (
            BearerToken(credentials.token, credentials.token_expires_at) if credentials.token else None
        )
        self._obtained_at = time.time()
        self._generation = 0
        self._rejected_generation = -1
        self._hold_until = 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> tuple[str | None, int]:
        if self._needs_refresh(time.time()):
            async with self._lock:
                if self._needs_refresh(time.time()):
                    await self._refresh()
        return (self._token.value if self._token else None), self._generation

    def rejected(self, generation: int) -> None:
        """The apiserver answered 401 to a request that carried token ``generation``."""
        self._rejected_generation = max(self._rejected_generation, generation)

    def _needs_refresh(self, now: float) -> bool:
        if self._source is None or now < self._hold_until:
            return False
        if self._rejected_generation == self._generation:
            return True
        expires_at = self._token.expires_at if self._token else None
        return refresh_due(expires_at, self._obtained_at, now, self._reread_seconds)

    async def _refresh(self) -> None:
        assert self._source is not None
        try:
            token = await asyncio.to_thread(self._source)
        except Exception as error:  # a failing plugin or file must not fail requests the old token may pass
            logger.warning("cannot refresh the API token (keeping the current one): %s", str(error)[:200])
            token = None
        now = time.time()
        if token is None or token == self._token:
            # Nothing new (a broken exec plugin leaves the loader's old token): do not ask again
            # on every request.
            self._hold_until = now + REFRESH_HOLD_SECONDS
            if token is not None:
                self._obtained_at = now
            return
        self._token = token
        self._obtained_at = now
        self._generation += 1


class ApiError(Exception):
    """A non-2xx answer from the apiserver, carrying the Status fields that matter."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        retry_after: float | None = None,
        body: Mapping[str, Any] | None = None,
        corrupt_keys: tuple[str, ...] = (),
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.body: Mapping[str, Any] = body or {}
        # StorageReadError: the etcd keys of the stored objects the apiserver could not decode.
        self.corrupt_keys = corrupt_keys


class TransportError(Exception):
    """The request did not get an HTTP answer (connection refused, reset, timeout)."""


class ResponseTooLarge(TransportError):
    """The answer was longer than the caller allowed; the rest was not read."""


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class _RawReply:
    status: int
    text: str


async def _read_text(reply: aiohttp.ClientResponse, max_bytes: int | None, what: str) -> str:
    """The body as text, refusing to hold more than ``max_bytes`` of it."""
    if max_bytes is None:
        return await reply.text()
    declared = reply.content_length
    if declared is not None and declared > max_bytes:
        raise ResponseTooLarge(f"{what}: answer of {declared} bytes is over the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in reply.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"{what}: answer is over the {max_bytes}-byte limit")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode(reply.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know: the metrics text is ASCII anyway
        return b"".join(chunks).decode("utf-8", errors="replace")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (the apiserver sends whole seconds)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _ssl_context(credentials: ApiCredentials) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=credentials.ca_path)
    if credentials.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if credentials.certificate_path and credentials.private_key_path:
        context.load_cert_chain(credentials.certificate_path, credentials.private_key_path)
    return context


class KubeApi:
    """Async raw-JSON access to one apiserver. Use as ``async with KubeApi(creds) as api``."""

    def __init__(self, credentials: ApiCredentials, *, request_timeout: float = 60.0) -> None:
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tokens = _TokenKeeper(credentials)
        # Objects per request path that carried a last-applied annotation (dropped at parse):
        # what a preflight or scan can warn about without ever holding the annotation itself.
        self.last_applied_dropped: Counter[str] = Counter()
        # "namespace/name" of each Secret an answer carried it for: its data crossed the wire.
        # Names only, and a set, so a list read twice (a 410 restart) counts each Secret once.
        self.secrets_with_last_applied: set[str] = set()

    async def __aenter__(self) -> KubeApi:
        # Building the SSL context reads certificate files: keep it off the event loop.
        context = await asyncio.to_thread(_ssl_context, self.credentials)
        connector = aiohttp.TCPConnector(ssl=context, limit=64)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> ApiResponse:
        """Send one request; raise :class:`ApiError` on a non-2xx answer, :class:`TransportError` on none."""
        data = None
        if body is not None:
            data = json.dumps(body)
        reply = await self._send(
            method, path, params=params, data=data, content_type=content_type, accept=accept, max_bytes=None
        )
        status, document, carriers = reply.status, *_decode(reply.text)
        del reply  # its text still holds the bytes just dropped from the document
        if carriers:
            self.last_applied_dropped[path] += len(carriers)
            if _SECRET_PATH.match(path):
                self.secrets_with_last_applied.update(carriers)
        return ApiResponse(status, document)

    async def get_text(
        self, path: str, *, accept: str = TEXT_ACCEPT, max_bytes: int = MAX_TEXT_RESPONSE_BYTES
    ) -> str:
        """GET a non-JSON endpoint (``/metrics``, ``/livez?verbose``) as text.

        Same credentials, TLS and error types as :meth:`request`; a body longer than
        ``max_bytes`` raises :class:`ResponseTooLarge` instead of filling memory.
        """
        return (await self._send("GET", path, accept=accept, max_bytes=max_bytes)).text

    async def _send(
        self,
        method: str,
        path: str,
        *,
        accept: str,
        max_bytes: int | None,
        params: Mapping[str, str] | None = None,
        data: str | None = None,
        content_type: str | None = None,
    ) -> _RawReply:
        if self._session is None:
            raise RuntimeError("KubeApi used outside 'async with'")
        token, generation = await self._tokens.current()
        headers = {"Accept": accept}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if data is not None:
            headers["Content-Type"] = content_type or "application/json"
        url = self.credentials.server + path
        try:
            async with self._session.request(method, url, params=params, data=data, headers=headers) as reply:
                text = await _read_text(reply, max_bytes, f"{method} {path}")
                status = reply.status
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransportError(f"{method} {path}: {type(error).__name__}: {error}") from error
        if status >= 300:
            if status == 401:
                # Rotated, revoked or expired early: the retry carries a fresh token.
                self._tokens.rejected(generation)
            raise api_error(status, _decode(text)[0] or _health_answer(path, text), retry_after)
        return _RawReply(status, text)

    async def get_json(self, path: str) -> dict[str, Any]:
        return (await self.request("GET", path)).body

    async def list_metadata(self, path: str, *, limit: int, continue_token: str | None) -> dict[str, Any]:
        """One page of a list, metadata only."""
        params = {"limit": str(limit)}
        if continue_token:
            params["continue"] = continue_token
        return (await self.request("GET", path, params=params, accept=METADATA_LIST)).body

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        content_type: str = MERGE_PATCH,
        params: Mapping[str, str] | None = None,
        answer: PatchAnswer = PatchAnswer.TABLE,
    ) -> dict[str, Any]:
        """Patch; the answer never holds a full object (Secret data), and by default no metadata.

        ``PatchAnswer.TABLE`` returns ``{"kind": "Table", "metadata": {"resourceVersion": ...}}``,
        the object's resourceVersion after the write and nothing else. ``PatchAnswer.METADATA``
        returns the PartialObjectMetadata, without the last-applied annotation. Errors are
        Status objects whatever was asked for, raised as :class:`ApiError` as for any request.
        """
        if answer is PatchAnswer.METADATA:
            reply = await self.request(
                "PATCH", path, params=params, body=body, content_type=content_type, accept=METADATA_OBJECT
            )
            return reply.body
        query = {**(params or {}), "includeObject": "None"}
        reply = await self.request(
            "PATCH", path, params=query, body=body, content_type=content_type, accept=TABLE_OBJECT
        )
        return table_answer(reply.body)

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)


def table_answer(document: Mapping[str, Any]) -> dict[str, Any]:
    """What a Table answer to a patch is kept for: the object's resourceVersion after the write.

    The cells go: custom resources' printer columns may show any field of the object.
    """
    metadata = document.get("metadata")
    version = metadata.get("resourceVersion") if isinstance(metadata, Mapping) else None
    kept: dict[str, Any] = {"resourceVersion": str(version)} if version else {}
    return {"kind": str(document.get("kind") or ""), "metadata": kept}


def _decode(text: str) -> tuple[dict[str, Any], list[str]]:
    """The JSON document, already without last-applied annotations, and whose they were."""
    if not text:
        return {}, []
    try:
        document = json.loads(text)
    except ValueError:
        return {}, []  # not a Status (a proxy's error page): nothing we can safely keep
    if not isinstance(document, dict):
        return {}, []
    return document, drop_last_applied(document)


def _health_answer(path: str, text: str) -> dict[str, Any]:
    """A failing health check answers in plain text (``/readyz/kms-providers`` names the KMS
    error there); only such paths keep it, and :func:`safe_message` keeps only the KMS part."""
    if text and path.split("?", 1)[0].startswith(HEALTH_PATHS):
        return {"message": text}
    return {}


def drop_last_applied(document: dict[str, Any]) -> list[str]:
    """Remove the last-applied annotation from an object or each item of a list, in place.

    Only that one annotation goes: the engine's writes never send annotations, so what is
    stored cannot change. Returns the objects that carried it, as ``namespace/name`` (or
    ``name``), so a warning can name them without ever holding the annotation.
    """
    items = document.get("items")
    carriers: list[str] = []
    for candidate in [document, *(items if isinstance(items, list) else [])]:
        metadata = candidate.get("metadata") if isinstance(candidate, dict) else None
        if not isinstance(metadata, dict):
            continue
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict) and annotations.pop(LAST_APPLIED_ANNOTATION, None) is not None:
            carriers.append(_object_name(metadata))
    return carriers


def _object_name(metadata: Mapping[str, Any]) -> str:
    name, namespace = str(metadata.get("name") or "?"), metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def api_error(status: int, document: Mapping[str, Any], retry_after: float | None = None) -> ApiError:
    """An ApiError whose message is safe to store: see :func:`safe_message`."""
    reason = str(document.get("reason") or "") or f"HTTP{status}"
    # Keep the body for its metadata (a 410's fresh continue token), never its free text.
    body = {key: value for key, value in document.items() if key != "message"}
    corrupt = corrupt_keys(document) if reason == STORAGE_READ_ERROR else ()
    return ApiError(
        status,
        reason,
        safe_message(reason, document),
        retry_after=retry_after,
        body=body,
        corrupt_keys=corrupt,
    )


STORAGE_READ_ERROR = "StorageReadError"
# The apiserver's storage error names each undecodable object by its etcd key, then says why
# ("StorageError: corrupt object, Code: 7, Key: /registry/..., ResourceVersion: 0, ...").
_CORRUPT_KEY = re.compile(r"Key: (/[^,\s]{1,1024}), ResourceVersion")


def corrupt_keys(document: Mapping[str, Any]) -> tuple[str, ...]:
    """The etcd keys a StorageReadError names, in key order (the rest of its text is dropped)."""
    return tuple(sorted(set(_CORRUPT_KEY.findall(str(document.get("message") or "")))))


_WEBHOOK_DENIAL = re.compile(r'admission webhook "([^"]{1,253})" denied the request')
_POLICY_DENIAL = re.compile(r"ValidatingAdmissionPolicy '([^']{1,253})'")
# A webhook with failurePolicy Fail that cannot be reached: the apiserver answers 500 for it.
_WEBHOOK_UNREACHABLE = re.compile(r'failed calling webhook "([^"]{1,253})"')


def safe_message(reason: str, document: Mapping[str, Any]) -> str:
    """The part of an apiserver error message that cannot echo object content, capped.

    Admission webhooks and policies write arbitrary text (it may quote the object), so a denial
    keeps only the webhook's name. An Invalid answer keeps the field paths, not the values.
    Messages the apiserver composes from names (Conflict, NotFound, RBAC Forbidden) are kept;
    any other message is dropped: the reason and HTTP code still say what happened.
    """
    message = str(document.get("message") or "")
    webhook = _WEBHOOK_DENIAL.search(message)
    if webhook:
        return f"denied by admission webhook {webhook.group(1)}"
    policy = _POLICY_DENIAL.search(message)
    if policy:
        return f"denied by ValidatingAdmissionPolicy {policy.group(1)}"
    unreachable = _WEBHOOK_UNREACHABLE.search(message)
    if unreachable:
        # The rest of the text is the webhook's URL and a transport error: the name says what to fix.
        return f"admission webhook {unreachable.group(1)} could not be called (its failurePolicy is Fail)"
    if "denied" in message:
        return "denied by admission"
    if reason == "Invalid":
        return _invalid_fields(document)
    if reason == STORAGE_READ_ERROR:
        keys = corrupt_keys(document)
        text = "the apiserver cannot decode stored object(s): " + ", ".join(keys) if keys else "unreadable"
        return text[:MAX_ERROR_MESSAGE]
    if reason in SAFE_MESSAGE_REASONS:
        return message[:MAX_ERROR_MESSAGE]
    if reason in SERVER_ERROR_REASONS:
        return kms_summary(message) or ""
    return ""


HEALTH_PATHS = ("/readyz", "/healthz", "/livez")
# An apiserver error written by its storage or health code (JSON InternalError, or a health
# check's plain text): the only answers whose KMS part is kept.
SERVER_ERROR_REASONS = frozenset({"InternalError", "HTTP500", "HTTP503"})
KMS_PREFIX = "KMS: "
_DEK_EXPIRED = re.compile(
    r'encryptedDEKSource with keyID hash "(sha256:[0-9a-f]{64})" expired at (\S{1,40}?)[ )]'
)
_KMS_PROVIDER = re.compile(r"KMS Provider ([A-Za-z0-9._-]{1,64})")
_KMS_CHECK = re.compile(r"(kms-provider-[0-9]{1,3})")  # the check's name, when the text has no provider
_GRPC_CODE = re.compile(r"rpc error: code = ([A-Za-z]{1,32})")
_KEY_DISABLED = re.compile(r"KMS_KEY_DISABLED: key ([A-Za-z0-9._-]{1,128}) is disabled")


def kms_summary(message: str) -> str | None:
    """What a KMS failure relayed by the apiserver says, rebuilt from fixed parts (None if it is not one).

    Only parts of fixed shape are kept (a key id hash, a provider name, a gRPC code, the id of a
    disabled key), never free text, so nothing else the message may carry can pass.
    """
    expired = _DEK_EXPIRED.search(message)
    if expired:
        return (
            f"{KMS_PREFIX}the apiserver's DEK seed under key id hash {expired.group(1)} expired at "
            f"{expired.group(2)}: no healthy answer from its KMS plugin for 3 minutes"
        )
    if "kms-provider" not in message and "KMS Provider" not in message:
        return None
    provider = _KMS_PROVIDER.search(message) or _KMS_CHECK.search(message)
    parts = [f"{KMS_PREFIX}provider {provider.group(1)}" if provider else f"{KMS_PREFIX}provider"]
    code = _GRPC_CODE.search(message)
    parts.append(f"gRPC {code.group(1)}" if code else "health check failed")
    disabled = _KEY_DISABLED.search(message)
    if disabled:
        parts.append(f"KMS_KEY_DISABLED: key {disabled.group(1)} is disabled")
    return ": ".join(parts)[:MAX_ERROR_MESSAGE]


def _invalid_fields(document: Mapping[str, Any]) -> str:
    causes = (document.get("details") or {}).get("causes") or []
    fields = sorted({str(c.get("field")) for c in causes if isinstance(c, Mapping) and c.get("field")})
    text = "invalid fields: " + ", ".join(fields) if fields else "invalid"
    return text[:MAX_ERROR_MESSAGE]
