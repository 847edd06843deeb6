"""The one Kubernetes API client: credentials, raw JSON over aiohttp, metadata-only requests.

Credentials come from a kubeconfig or the in-cluster service account through the official
``kubernetes`` package's loaders (blocking, so only at startup); every request afterwards is
async. Lists and patch responses ask for ``PartialObjectMetadata`` so decrypted payloads
(Secret data, ConfigMap data) never reach this process.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

from kms_storage_migrator.errors import UserError

METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "kms-storage-migrator"
# Prometheus text format first: the apiserver would otherwise offer protobuf or OpenMetrics.
TEXT_ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
# The apiserver's /metrics is a few MB even on big clusters; beyond this something is wrong.
MAX_TEXT_RESPONSE_BYTES = 32 * 1024 * 1024
# The in-cluster token is rotated by the kubelet; re-reading it this often keeps it valid
# (and a 401 forces a re-read before the next request, see KubeApi.request).
TOKEN_REREAD_SECONDS = 60.0
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
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ApiCredentials:
    """Where the apiserver is and how to prove who we are (paths, never secret values in logs)."""

    server: str
    ca_path: str | None = None
    certificate_path: str | None = None
    private_key_path: str | None = None
    token: str | None = None
    token_path: str | None = None
    insecure: bool = False

    def describe(self) -> str:
        return self.server


def load_credentials(kubeconfig: Path | None) -> ApiCredentials:
    """Load credentials from ``kubeconfig`` or, when it is None, from the in-cluster service account.

    Blocking (the loaders read files and may run exec plugins): call it once at startup.
    """
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            if not kubeconfig.is_file():
                raise UserError(f"--kubeconfig {kubeconfig}: no such file")
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
            token_path = None
        else:
            config.load_incluster_config(client_configuration=configuration)
            token_path = str(SERVICE_ACCOUNT_DIR / "token")
    except config.ConfigException as error:
        source = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise UserError(f"cannot load Kubernetes credentials from {source}: {error}") from error
    authorization = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get(
        "BearerToken"
    )
    token = None
    if authorization:
        token = authorization.removeprefix("Bearer ").strip()
    return ApiCredentials(
        server=configuration.host.rstrip("/"),
        ca_path=configuration.ssl_ca_cert,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token,
        token_path=token_path,
        insecure=not configuration.verify_ssl,
    )


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
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        self.body: Mapping[str, Any] = body or {}


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
        self._token = credentials.token
        self._token_read_at = time.monotonic()
        self._token_stale = False  # set by a 401: re-read the token file before the next request

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

    async def _authorization(self) -> dict[str, str]:
        path = self.credentials.token_path
        if path and (self._token_stale or time.monotonic() - self._token_read_at > TOKEN_REREAD_SECONDS):
            self._token = (await asyncio.to_thread(Path(path).read_text)).strip()
            self._token_read_at = time.monotonic()
            self._token_stale = False
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

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
        return ApiResponse(reply.status, _decode(reply.text))

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
        headers = {"Accept": accept, **await self._authorization()}
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
                # The kubelet may have rotated the token: the retry must not wait 60 s for a re-read.
                self._token_stale = True
            raise api_error(status, _decode(text), retry_after)
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
    ) -> dict[str, Any]:
        """Patch, asking for metadata only: no code path can receive a full object (Secret data)."""
        reply = await self.request(
            "PATCH", path, params=params, body=body, content_type=content_type, accept=METADATA_OBJECT
        )
        return reply.body

    async def create_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)


def _decode(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        return {}  # not a Status (a proxy's error page): nothing we can safely keep
    return document if isinstance(document, dict) else {}


def api_error(status: int, document: Mapping[str, Any], retry_after: float | None = None) -> ApiError:
    """An ApiError whose message is safe to store: see :func:`safe_message`."""
    reason = str(document.get("reason") or "") or f"HTTP{status}"
    # Keep the body for its metadata (a 410's fresh continue token), never its free text.
    body = {key: value for key, value in document.items() if key != "message"}
    return ApiError(status, reason, safe_message(reason, document), retry_after=retry_after, body=body)


_WEBHOOK_DENIAL = re.compile(r'admission webhook "([^"]{1,253})" denied the request')
_POLICY_DENIAL = re.compile(r"ValidatingAdmissionPolicy '([^']{1,253})'")


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
    if "denied" in message:
        return "denied by admission"
    if reason == "Invalid":
        return _invalid_fields(document)
    if reason in SAFE_MESSAGE_REASONS:
        return message[:MAX_ERROR_MESSAGE]
    return ""


def _invalid_fields(document: Mapping[str, Any]) -> str:
    causes = (document.get("details") or {}).get("causes") or []
    fields = sorted({str(c.get("field")) for c in causes if isinstance(c, Mapping) and c.get("field")})
    text = "invalid fields: " + ", ".join(fields) if fields else "invalid"
    return text[:MAX_ERROR_MESSAGE]
