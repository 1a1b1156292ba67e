"""``GET <base_url>/jupyter-burst/dashboard/<cluster>/<page>``: a cluster's Dask dashboard,
through this Jupyter server, behind its login.

The browser never reaches the cluster: this handler asks the cluster's head to serve its
pages under this very path (``driver/dashboard.py``), then forwards each page request, and
bokeh's websocket, to the head with the cluster's TLS client certificate. Nothing is opened
to the world, nor to other users of the machine; the page's own links and its websocket keep
working because the head serves them under the same path this server answers at.

Only what a page viewer needs goes through: GET and the websocket; not the browser's
cookies (the Jupyter server's own login must not reach a cluster machine).
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import tornado.httpclient
import tornado.web
import tornado.websocket
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin

from jupyter_burst import config
from jupyter_burst.driver.dashboard import DashboardAddress, dashboard_address
from jupyter_burst.errors import BurstError
from jupyter_burst.server.handlers import AUTH_RESOURCE, dashboard_prefix

REQUEST_TIMEOUT_SECONDS = 30.0
_FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Language", "If-None-Match", "If-Modified-Since")
# Not copied back: what the proxy sets itself, hop-by-hop headers, and cookies.
_DROPPED_RESPONSE_HEADERS = frozenset(
    {
        "connection",
        "content-encoding",
        "content-length",
        "date",
        "keep-alive",
        "server",
        "set-cookie",
        "transfer-encoding",
    }
)

# (state folder, cluster, prefix) -> where that cluster serves its pages under that prefix
_addresses: dict[tuple[str, str, str], DashboardAddress] = {}


class DashboardProxyHandler(WebSocketMixin, tornado.websocket.WebSocketHandler, JupyterHandler):
    """A cluster's dashboard pages and their websocket, forwarded to the cluster's head."""

    auth_resource = AUTH_RESOURCE

    upstream: tornado.websocket.WebSocketClientConnection | None = None
    _relay: asyncio.Task | None = None
    _subprotocols: list[str] | None = None
    _target: DashboardAddress | None = None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # The tab the user opened says why there is no dashboard, in one line (Jupyter's own
        # error page says only "page does not exist").
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {message}\n")

    def skip_check_origin(self) -> bool:
        return False  # a foreign page may not open the websocket, whatever its credentials

    @ws_authenticated  # 403 without credentials, for the page as for its websocket
    async def get(self, cluster: str, page: str) -> None:  # type: ignore[override]
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise tornado.web.HTTPError(403)
        if not page:
            self.redirect(dashboard_prefix(self.base_url, cluster) + "status")
            return
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            self._target = await self._address(cluster)
            await super().get(cluster, page)
        else:
            await self._forward_page(cluster)

    async def _address(self, cluster: str, fresh: bool = False) -> DashboardAddress:
        state_dir = config.state_dir()
        prefix = dashboard_prefix(self.base_url, cluster)
        key = (str(state_dir), cluster, prefix)
        if fresh or key not in _addresses:
            try:
                _addresses[key] = await asyncio.get_running_loop().run_in_executor(
                    None, dashboard_address, pathlib.Path(state_dir), cluster, prefix
                )
            except BurstError as exc:
                raise tornado.web.HTTPError(404, "%s", str(exc)) from None
            except OSError as exc:
                raise tornado.web.HTTPError(
                    502, "cluster '%s' did not answer: %s", cluster, exc
                ) from None
        return _addresses[key]

    async def _forward_page(self, cluster: str) -> None:
        headers = {
            k: self.request.headers[k]
            for k in _FORWARDED_REQUEST_HEADERS
            if k in self.request.headers
        }
        for attempt in (0, 1):
            target = await self._address(cluster, fresh=attempt > 0)
            url = target.origin + self.request.uri
            response = await tornado.httpclient.AsyncHTTPClient().fetch(
                tornado.httpclient.HTTPRequest(
                    url,
                    headers=headers,
                    follow_redirects=False,
                    request_timeout=REQUEST_TIMEOUT_SECONDS,
                    ssl_options=target.tls,
                ),
                raise_error=False,
            )
            if response.code != 599:  # 599: no answer at all (a new head, a new certificate)
                break
        if response.code == 599:
            raise tornado.web.HTTPError(
                502, "cluster '%s' dashboard did not answer: %s", cluster, response.error
            )
        self.set_status(response.code, response.reason)
        copied: set[str] = set()
        for name, value in response.headers.get_all():
            if name.lower() in _DROPPED_RESPONSE_HEADERS:
                continue
            # The head's value replaces this server's default (Content-Type: text/html), and
            # a header the head repeats stays repeated.
            if name.lower() in copied:
                self.add_header(name, value)
            else:
                self.set_header(name, value)
                copied.add(name.lower())
        if response.body:
            self.write(response.body)
        await self.finish()

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        # bokeh sends its session token as the second subprotocol and answers "bokeh".
        self._subprotocols = list(subprotocols)
        return subprotocols[0] if subprotocols else None

    async def open(self, cluster: str, page: str) -> None:  # type: ignore[override]
        super().open(cluster, page)
        assert self._target is not None
        url = "wss://" + self._target.origin.removeprefix("https://") + self.request.uri
        try:
            self.upstream = await tornado.websocket.websocket_connect(
                tornado.httpclient.HTTPRequest(
                    url, request_timeout=REQUEST_TIMEOUT_SECONDS, ssl_options=self._target.tls
                ),
                subprotocols=self._subprotocols,
                max_message_size=self.max_message_size,
            )
        except (OSError, tornado.httpclient.HTTPClientError) as exc:
            self.log.warning("jupyter-burst dashboard of %s: no websocket: %s", cluster, exc)
            self.close(1011, "the cluster's dashboard did not answer")
            return
        self._relay = asyncio.ensure_future(self._relay_from_head())

    async def _relay_from_head(self) -> None:
        assert self.upstream is not None
        try:
            while (message := await self.upstream.read_message()) is not None:
                await self.write_message(message, binary=isinstance(message, bytes))
        except (asyncio.CancelledError, tornado.websocket.WebSocketClosedError):
            return
        self.close(1000, "the cluster's dashboard closed")

    def on_message(self, message: str | bytes) -> Any:
        if self.upstream is not None:
            return self.upstream.write_message(message, binary=isinstance(message, bytes))
        return None

    def on_close(self) -> None:
        if self._relay is not None:
            self._relay.cancel()
        if self.upstream is not None:
            self.upstream.close()
