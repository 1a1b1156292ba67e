"""Lambda Cloud's public REST API (v1) as the kernel calls it: its key, its pace, its errors.

The key is the user's (``LAMBDA_API_KEY``, else ``api_key = ...`` in
``burst.lambda.api-key-file``): read here, sent only to the API over HTTPS, never written
by us, never put on a node or in the ledger. The API allows about one request a second and
one launch in ten to twelve seconds: requests are spaced here so that a cell never meets the
limit, and a 429 that comes anyway is waited out (its ``Retry-After``) a bounded number of
times. An error is the API's own ``{"error": {"code", "message", "suggestion"}}``, kept as
:class:`LambdaApiError` so that callers can tell capacity from a bad key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pathlib
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from jupyter_burst import config
from jupyter_burst.errors import ClusterError

DEFAULT_URL = "https://cloud.lambda.ai/api/v1"
DEFAULT_KEY_FILE = "~/.lambda_cloud/lambda_keys"
KEY_ENV = "LAMBDA_API_KEY"
LAUNCH_PATH = "/instance-operations/launch"
# Seconds between two requests, and between two launches: the API's limits (one a second,
# one launch in ten seconds) and a margin, as it counts arrivals and we count departures.
REQUEST_SPACING = 1.2
LAUNCH_SPACING = 12.0
# Beyond what a 429's Retry-After asks: its reply took time to come, ours takes time to go.
_RETRY_MARGIN = 0.1
_RATE_LIMITED_TRIES = 5
_LONGEST_WAIT = 60.0
_TIMEOUT = 30.0
_KEY_HINT = (
    f"export {KEY_ENV}=<key> (cloud.lambda.ai, API keys), or write 'api_key = <key>' in "
    f"{DEFAULT_KEY_FILE} (mode 600)"
)
# The API's codes a caller acts on: this offer cannot be had now (try the next), or the key
# is wrong (explain, never retry).
CAPACITY_CODES = frozenset(
    {"instance-operations/launch/insufficient-capacity", "global/quota-exceeded"}
)
AUTH_CODES = frozenset({"global/invalid-api-key", "global/account-inactive"})


class LambdaApiError(ClusterError):
    """What the API answered instead: its code, message and suggestion."""

    def __init__(self, status: int, code: str, message: str, suggestion: str = "") -> None:
        # The API's words, on one line whatever it sent.
        message, suggestion = " ".join(message.split()), " ".join(suggestion.split())
        self.status, self.code, self.message, self.suggestion = status, code, message, suggestion
        # A wrong key: how to give the right one is ours to say; else the API's suggestion.
        fix = f"check the key: {_KEY_HINT}" if code in AUTH_CODES else suggestion.rstrip(".")
        said = f"Lambda Cloud answered {status} {code}: {message.rstrip('.')}"
        super().__init__(f"{said}; {fix}" if fix else said)

    @property
    def capacity(self) -> bool:
        """This type, in this region, cannot be launched now: the next offer may be."""
        return self.code in CAPACITY_CODES


def api_url() -> str:
    """``burst.lambda.api-url``: HTTPS, or plain HTTP to this machine only (a test's fake)."""
    url = str(config.get("lambda.api-url", None) or DEFAULT_URL).rstrip("/")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
        raise ClusterError(
            f"burst.lambda.api-url is {url}: the API key would travel in clear; use an "
            f"https:// address (the default is {DEFAULT_URL})"
        )
    return url


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def api_key() -> str | None:
    """The user's key, or None where there is none (offers then come from the catalog)."""
    key = os.environ.get(KEY_ENV, "").strip()
    if key:
        return key
    path = pathlib.Path(str(config.get("lambda.api-key-file", None) or DEFAULT_KEY_FILE))
    return read_key_file(path.expanduser(), "the Lambda API key file")


def read_key_file(path: pathlib.Path, what: str) -> str | None:
    """The ``api_key = <key>`` of a file that is this user's alone; None if it is missing."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClusterError(f"cannot read {what} {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ClusterError(f"{what} {path} is open to other users: chmod 600 {path}")
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "api_key" and value.strip():
            return value.strip()
    raise ClusterError(f"{what} {path} has no 'api_key = <key>' line")


def require_key() -> str:
    """The key, or the one line that says how to give one."""
    key = api_key()
    if key is None:
        raise ClusterError(f"Lambda Cloud needs an API key: {_KEY_HINT}")
    return key


class _Pace:
    """The earliest moment the next request (and the next launch) may go, per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_request = 0.0
        self.next_launch = 0.0

    def wait(self, launch: bool, clock: Callable[[], float], sleep: Callable[[float], None]):
        with self.lock:
            now = clock()
            at = max(now, self.next_request, self.next_launch if launch else now)
            self.next_request = at + REQUEST_SPACING
            if launch:
                self.next_launch = at + LAUNCH_SPACING
        if at > now:
            sleep(at - now)


_pace = _Pace()


class LambdaApi:
    """Requests to the API; ``data`` of each answer."""

    def __init__(
        self,
        key: str,
        url: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._key = key
        self.url = url or api_url()
        self._clock, self._sleep = clock, sleep
        # When the last request left (the wall clock, after the pace's wait): Lambda bills a
        # launch from when it arrives, and says no time of its own.
        self.sent_at = 0.0

    def __repr__(self) -> str:  # never the key
        return f"LambdaApi({self.url!r})"

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(_RATE_LIMITED_TRIES):
            _pace.wait(path == LAUNCH_PATH, self._clock, self._sleep)
            request = urllib.request.Request(
                self.url + path,
                data=data,
                method=method,
                headers={
                    "Authorization": f"Bearer {self._key}",
                    "Accept": "application/json",
                    **({"Content-Type": "application/json"} if data is not None else {}),
                },
            )
            self.sent_at = time.time()
            try:
                with urllib.request.urlopen(request, timeout=_TIMEOUT) as reply:
                    return json.loads(reply.read() or b"{}").get("data")
            except urllib.error.HTTPError as exc:
                error = _api_error(exc)
                if exc.code != 429 or attempt == _RATE_LIMITED_TRIES - 1:
                    raise error from None
                self._sleep(_retry_after(exc, attempt))
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ClusterError(
                    f"Lambda Cloud's API at {self.url} could not be reached ({reason}); check "
                    "the network, or burst.lambda.api-url"
                ) from None
        raise AssertionError("unreachable")  # the last try raised


def _api_error(exc: urllib.error.HTTPError) -> LambdaApiError:
    try:
        error = json.loads(exc.read() or b"{}").get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if exc.code == 429 and not error:
        error = {"code": "global/rate-limited", "message": "too many requests"}
    return LambdaApiError(
        exc.code,
        str(error.get("code") or "global/unknown"),
        str(error.get("message") or exc.reason or "no message"),
        str(error.get("suggestion") or ""),
    )


def _retry_after(exc: urllib.error.HTTPError, attempt: int) -> float:
    """The API's ``Retry-After`` seconds, else a doubling wait; never beyond a minute."""
    try:
        wanted = float(exc.headers.get("Retry-After", "")) + _RETRY_MARGIN
    except (TypeError, ValueError):
        wanted = LAUNCH_SPACING * 2**attempt / 4
    return min(max(wanted, _RETRY_MARGIN), _LONGEST_WAIT)
