"""Spot interruption notices: a node learns it will be reclaimed, and the running cell hears of it.

On AWS a spot instance gets a two-minute notice from the instance metadata service (IMDS):
``/latest/meta-data/spot/instance-action`` answers 404 until then, and 200 with
``{"action": "terminate", "time": "..."}`` once the instance is to be reclaimed. IMDSv2 wants
a session token first (``PUT /latest/api/token``); an IMDS that refuses tokens (403, 404,
405) is asked the IMDSv1 way, without one.

On GCP (``burst.preemption.kind: gcp``) a Spot instance's metadata server answers
``/computeMetadata/v1/instance/preempted`` (with the header ``Metadata-Flavor: Google``)
``FALSE`` until the instance is preempted, then ``TRUE``: about 30 seconds before it stops.

The policy (what an answer means, when a token is needed) is :class:`ImdsSession` and
:func:`parse_notice`, pure and tested without a network; :class:`Watcher` does the polling,
in one daemon thread per worker process, with the stdlib only. The watcher is on only when
``burst.preemption.url`` is set: a laptop has no IMDS, and nothing should ever be asked of
169.254.169.254 by default.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from jupyter_burst import config

log = logging.getLogger("jupyter_burst.worker.preemption")

NOTICE_PATH = "/latest/meta-data/spot/instance-action"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_SECONDS = 21600
REQUEST_TIMEOUT = 1.0
GCP_PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"
GCP_HEADERS = {"Metadata-Flavor": "Google"}
# IMDS refuses token requests with these when IMDSv2 is off (or not there at all): ask v1-style.
_NO_TOKENS = frozenset({403, 404, 405})
_MAX_BODY = 64 * 1024

# (method, url, headers) -> (HTTP status, body); status 0 when there was no answer at all.
Fetch = Callable[[str, str, dict[str, str]], tuple[int, bytes]]
Listener = Callable[["Notice"], None]


@dataclass(frozen=True)
class Notice:
    """An interruption notice: ``action`` (terminate, stop or hibernate) at ``time`` (UTC, ISO 8601)."""

    action: str
    time: str

    @property
    def message(self) -> str:
        """The line the cell shows (and the ledger keeps)."""
        return f"burst: this node will be reclaimed at {self.time} (spot interruption notice)"


def parse_gcp_notice(status: int, body: bytes, now: float) -> Notice | None:
    """GCP's answer: ``TRUE`` (and only that, from a 200) is a notice, dated ``now``."""
    if status != 200 or body.strip() != b"TRUE":
        return None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return Notice(action="terminate", time=stamp)


def parse_notice(status: int, body: bytes) -> Notice | None:
    """The notice in an answer of the instance-action endpoint; None while there is none.

    Only a 200 with a JSON object naming an action counts: a proxy or captive portal that
    answers 200 with a web page must not stop anybody's training.
    """
    if status != 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or not data.get("action"):
        return None
    return Notice(action=str(data["action"]), time=str(data.get("time", "")))


@dataclass
class ImdsSession:
    """How to ask IMDS, learned from its answers: IMDSv2 with a token, or IMDSv1 without."""

    ttl: float = TOKEN_TTL_SECONDS
    token: str | None = None
    expires: float = 0.0
    v1: bool = False

    def needs_token(self, now: float) -> bool:
        return not self.v1 and (self.token is None or now >= self.expires)

    def token_answer(self, status: int, body: bytes, now: float) -> bool:
        """Learn from the token request's answer; True when the notice may be asked for now."""
        if status == 200 and body.strip():
            self.token = body.decode("ascii", "replace").strip()
            # Renew a minute early, so a token never expires between two polls.
            self.expires = now + max(0.0, self.ttl - 60)
            return True
        if status in _NO_TOKENS:
            self.v1, self.token = True, None
            return True
        return False  # no answer, or a server error: try again next round

    def headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.token} if self.token and not self.v1 else {}

    def notice_answer(self, status: int, body: bytes) -> Notice | None:
        """The notice in the answer, if any; a 401 means the token expired or IMDSv2 became required."""
        if status == 401:
            self.token, self.v1 = None, False
            return None
        return parse_notice(status, body)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # IMDS is never proxied


def http_fetch(method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One request with a short timeout; (status, body), or (0, b"") when nothing answered."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=REQUEST_TIMEOUT) as response:
            return response.status, response.read(_MAX_BODY)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code, b""
    except Exception:  # refused, timed out, reset, a bad URL: the node just has no notice
        return 0, b""


class Watcher:
    """Polls ``url`` (the IMDS base) every ``interval`` seconds until a notice comes.

    Listeners are called once with the notice: those following when it arrives, in the
    watcher's thread; one that starts following after it, at once in its own thread.
    """

    def __init__(
        self, url: str, interval: float = 5.0, fetch: Fetch = http_fetch, kind: str = "aws"
    ):
        self.url = url.rstrip("/")
        self.kind = kind  # whose metadata service: "aws" (IMDS) or "gcp"
        self.interval = max(0.05, float(interval))
        self.session = ImdsSession()
        self.notice: Notice | None = None
        self._fetch = fetch
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        # Held while listeners run, so that unfollowing waits for a callback under way (a
        # cell does not end while its on_preempt checkpoint is still being written).
        self._delivering = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> Notice | None:
        """One round: ask IMDS; the notice (kept, and told to the listeners once), else None."""
        if self.notice is not None:
            return self.notice
        if self.kind == "gcp":
            status, body = self._fetch("GET", self.url + GCP_PREEMPTED_PATH, dict(GCP_HEADERS))
            notice = parse_gcp_notice(status, body, time.time())
            if notice is not None:
                self._announce(notice)
            return notice
        now = time.monotonic()
        if self.session.needs_token(now):
            status, body = self._fetch(
                "PUT", self.url + TOKEN_PATH, {TOKEN_TTL_HEADER: str(int(self.session.ttl))}
            )
            if not self.session.token_answer(status, body, now):
                return None
        status, body = self._fetch("GET", self.url + NOTICE_PATH, self.session.headers())
        notice = self.session.notice_answer(status, body)
        if notice is not None:
            self._announce(notice)
        return notice

    def follow(self, listener: Listener) -> Callable[[], None]:
        """Tell ``listener`` of the notice (at once if it already came); returns the way to stop."""
        with self._lock:
            notice = self.notice
            if notice is None:
                self._listeners.append(listener)
        if notice is not None:
            with self._delivering:
                self._call(listener, notice)

        def unfollow() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
            with self._delivering:
                pass

        return unfollow

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="burst-preemption", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * REQUEST_TIMEOUT + 1)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                if self.check() is not None:
                    return  # nothing more to learn: the node is going
            except Exception:  # a bug of ours must not take the worker down with it
                log.exception("preemption watcher: unexpected error")
            self._stopped.wait(self.interval)

    def _announce(self, notice: Notice) -> None:
        with self._delivering:
            with self._lock:
                if self.notice is not None:
                    return
                self.notice = notice
                listeners, self._listeners = self._listeners, []
            for listener in listeners:
                self._call(listener, notice)

    @staticmethod
    def _call(listener: Listener, notice: Notice) -> None:
        try:
            listener(notice)
        except Exception:
            log.exception("preemption watcher: a listener failed")


_watcher: Watcher | None = None
_watcher_lock = threading.Lock()


def start_from_config() -> Watcher | None:
    """This process's watcher, started on the first call when ``burst.preemption.url`` is set.

    Workers read the setting from their environment (``DASK_BURST__PREEMPTION__URL``) or Dask
    config files when they start, as the node does; it is not a per-cell setting.
    """
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            url = config.get("preemption.url")
            if not url:
                return None
            interval = float(config.get("preemption.interval", 5))
            kind = str(config.get("preemption.kind") or "aws")
            _watcher = Watcher(str(url), interval, kind=kind).start()
        return _watcher


def follow(listener: Listener) -> Callable[[], None]:
    """Tell ``listener`` of this node's notice, if a watcher runs; returns the way to stop."""
    watcher = _watcher
    if watcher is None:
        return lambda: None
    return watcher.follow(listener)
