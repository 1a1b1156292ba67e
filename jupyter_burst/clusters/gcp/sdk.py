"""google-cloud-compute, imported only when the GCP provider is used, and what its errors mean.

The clients use the REST transport and Application Default Credentials (``gcloud auth
application-default login``, a service account on a VM, ``GOOGLE_APPLICATION_CREDENTIALS``):
google-auth reads them, we never do. ``burst.gcp.project`` names the project (else the one
ADC gives). ``burst.gcp.api-endpoint`` points them elsewhere: HTTPS, or plain HTTP to this
machine only (a test's fake), which gets anonymous credentials.

A long-running call is sent with its ``*_unary`` form and waited for here through the
operations client of the same endpoint: the client's own ``ExtendedOperation`` polls the
default endpoint whatever the client was given.

Compute Engine's errors a caller acts on are named here, in two kinds: this offer cannot be
had now (capacity or quota: move on to the next offer), and the credentials are wrong
(explain, never retry). An operation that fails carries its error in ``operation.error``,
not as an HTTP status: :func:`wait` raises it as one :class:`GcpError`.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from jupyter_burst import config
from jupyter_burst.errors import ClusterError

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
INSTALL_HINT = "pip install 'jupyter-burst[gcp]'"
# This machine type, in this zone and market, cannot be had now: the next offer may be.
CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "QUOTA_EXCEEDED",
        "UNSUPPORTED_OPERATION",
        "quotaExceeded",
        "resourcePoolExhausted",
    }
)
# Compute Engine failed on its side or asks us to slow down: a poll asks again.
TRANSIENT_CODES = frozenset(
    {"backendError", "internalError", "rateLimitExceeded", "INTERNAL", "UNAVAILABLE"}
)
_OPERATION_SECONDS = 300.0


class GcpError(ClusterError):
    """What Compute Engine answered instead: its code (the first error's reason) and message."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        said = " ".join(message.split()).rstrip(".")
        super().__init__(f"Compute Engine answered {code}: {said}")

    @property
    def capacity(self) -> bool:
        return self.code in CAPACITY_CODES

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES


@dataclass(frozen=True)
class Compute:
    """The clients a provider uses, for one project."""

    project: str
    instances: Any
    zone_operations: Any
    firewalls: Any
    global_operations: Any


def compute_v1() -> Any:
    try:
        from google.cloud import compute_v1 as module
    except ImportError:
        raise ClusterError(f"provider=gcp needs google-cloud-compute: {INSTALL_HINT}") from None
    return module


def endpoint(setting: str = "gcp.api-endpoint") -> str | None:
    """``burst.gcp.api-endpoint`` (or another endpoint setting), checked: HTTPS, or plain
    HTTP to this machine only."""
    url = config.get(setting, None)
    if not url:
        return None
    url = str(url).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    local = parts.scheme == "http" and _loopback(parts.hostname)
    if parts.scheme != "https" and not local:
        raise ClusterError(
            f"burst.{setting} is {url}: credentials would travel in clear; use an "
            "https:// address, or leave it unset for Google's own"
        )
    return url


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def credentials(setting: str = "gcp.api-endpoint") -> tuple[Any, str | None]:
    """(credentials, the project they name): anonymous for a fake on this machine, else ADC."""
    url = endpoint(setting)
    if url is not None and not url.startswith("https://"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials(), None
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        raise ClusterError(f"provider=gcp needs google-auth: {INSTALL_HINT}") from None
    try:
        found, project = google.auth.default(scopes=[SCOPE])
    except DefaultCredentialsError:
        raise ClusterError(
            "no Google Cloud credentials found; run `gcloud auth application-default login` "
            "(or set GOOGLE_APPLICATION_CREDENTIALS to a service account's key file)"
        ) from None
    return found, project


def compute() -> Compute:
    """The Compute Engine clients for ``burst.gcp.project`` (else the credentials' project)."""
    module = compute_v1()
    found, adc_project = credentials()
    project = str(config.get("gcp.project", None) or adc_project or "")
    if not project:
        raise ClusterError(
            "say which Google Cloud project to launch in: set burst.gcp.project "
            "(e.g. DASK_BURST__GCP__PROJECT=my-project)"
        )
    url = endpoint()
    options = {"api_endpoint": url} if url else None

    def client(kind: str) -> Any:
        return getattr(module, kind)(credentials=found, transport="rest", client_options=options)

    return Compute(
        project=project,
        instances=client("InstancesClient"),
        zone_operations=client("ZoneOperationsClient"),
        firewalls=client("FirewallsClient"),
        global_operations=client("GlobalOperationsClient"),
    )


def call(what: str, send: Any, *args: Any, **kwargs: Any) -> Any:
    """``send(*args, **kwargs)``, Google's API errors as one :class:`GcpError`."""
    from google.api_core import exceptions

    try:
        return send(*args, **kwargs)
    except exceptions.GoogleAPICallError as exc:
        raise from_api_error(exc) from None
    except exceptions.RetryError as exc:
        raise ClusterError(f"Compute Engine did not answer {what} in time ({exc})") from None


def from_api_error(exc: Any) -> GcpError:
    """An HTTP error of the API: the reason of its first error (``QUOTA_EXCEEDED``), else its
    status (``PERMISSION_DENIED``)."""
    reasons = [getattr(e, "get", lambda k, d=None: d)("reason") for e in exc.errors or []]
    code = next((r for r in reasons if r), None) or exc.grpc_status_code or exc.code
    # The REST transport's message starts with the request ("GET https://...: "): the
    # answer is what the user needs.
    message = re.sub(r"^[A-Z]+ \S+: ", "", str(exc.message or exc))
    return GcpError(getattr(code, "name", str(code)), message)


def wait(compute: Compute, operation: Any, what: str, zone: str | None = None) -> Any:
    """The operation once done (its ``end_time``: when, by Compute Engine's clock); its
    error, if it has one, as a :class:`GcpError`."""
    timeout = _OPERATION_SECONDS
    while operation.status != operation.Status.DONE and timeout > 0:
        if zone:
            operation = call(what, compute.zone_operations.wait, project=compute.project,
                             zone=zone, operation=operation.name)  # fmt: skip
        else:
            operation = call(what, compute.global_operations.wait, project=compute.project,
                             operation=operation.name)  # fmt: skip
        timeout -= 120  # the API's wait returns after at most two minutes
    if operation.status != operation.Status.DONE:
        raise ClusterError(f"Compute Engine did not finish {what} within {_OPERATION_SECONDS:g} s")
    errors = list(operation.error.errors) if operation.error else []
    if errors:
        raise GcpError(errors[0].code or "UNKNOWN", errors[0].message or what)
    return operation


def billing_fetch() -> Any:
    """GET of the Cloud Billing Catalog API (``burst.gcp.billing-endpoint``, else Google's)
    with the user's credentials: ``fetch(path, params) -> JSON``; errors as one line."""
    from google.auth.transport.requests import AuthorizedSession

    found, _ = credentials("gcp.billing-endpoint")
    base = endpoint("gcp.billing-endpoint") or "https://cloudbilling.googleapis.com"
    session = AuthorizedSession(found)

    def fetch(path: str, params: dict[str, str]) -> Any:
        try:
            reply = session.get(base + path, params=params, timeout=30)
        except OSError as exc:
            raise ClusterError(f"the Cloud Billing Catalog could not be reached ({exc})") from None
        if reply.status_code != 200:
            raise ClusterError(
                f"the Cloud Billing Catalog answered {reply.status_code}; its prices need the "
                "Cloud Billing API enabled for your credentials' project"
            )
        return reply.json()

    return fetch
