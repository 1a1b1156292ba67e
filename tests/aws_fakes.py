"""A moto server process for the AWS API, and hooks that give it EC2's habits and faults.

moto's known limits, and what stands in for them here:
- ``run_instances`` starts ``MinCount`` instances, where EC2 starts up to ``MaxCount`` when it
  has the capacity: :class:`Ec2Behaviour` asks moto for ``MaxCount`` (or fewer, to inject a
  partial launch).
- moto never runs out of capacity and never throttles: the same hooks raise the errors EC2
  raises (``InsufficientInstanceCapacity``, ``RequestLimitExceeded``, ...).
- moto ignores ``ClientToken``; the code under test must not rely on it.
- moto serves none of the public image parameters AWS publishes under ``/aws/service/`` (the
  newest Deep Learning AMI of a region) and refuses to store such a name: ``moto_server``
  serves those a test writes (``public_parameters``, ``tests/moto_public.py``).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.exceptions import ClientError

from jupyter_burst.worker.preemption import NOTICE_PATH, TOKEN_HEADER, TOKEN_PATH

LOCAL_IPV4_PATH = "/latest/meta-data/local-ipv4"

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(public_parameters: pathlib.Path | None = None) -> Iterator[str]:
    """A moto server on 127.0.0.1; its endpoint URL. Stopped (and waited for) afterwards.

    ``public_parameters``: a JSON file of the public SSM parameters it serves besides moto's
    own (region -> name -> value; ``tests/moto_public.py``), such as the newest Deep Learning
    AMI's id, which moto neither serves nor lets a test store.
    """
    port = free_port()
    server = ["-m", "moto.server"]
    if public_parameters is not None:
        server = ["-m", "tests.moto_public", str(public_parameters)]
    path = [str(pathlib.Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    process = subprocess.Popen(
        [sys.executable, *server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **CREDENTIALS, "PYTHONPATH": os.pathsep.join(filter(None, path))},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        process.kill()
        process.wait(10)


def aws_error(code: str, operation: str = "RunInstances", message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message or code}}, operation)


@dataclass
class Ec2Behaviour:
    """Hooks on one EC2 client: EC2's launch semantics, and faults chosen by the test.

    ``fault(params) -> str | None`` names the error code to raise for a ``RunInstances``
    call before it reaches moto (None: let it through); ``cap(params) -> int | None`` limits
    how many instances a call that goes through gets (a partial launch); ``crash_after``
    makes the client fail after moto launched the instances (the process "dies" between the
    launch and the ledger write).
    """

    fault: Callable[[dict], str | None] = lambda params: None
    cap: Callable[[dict], int | None] = lambda params: None
    crash_after: Callable[[dict], bool] = lambda params: False
    calls: list[dict] = field(default_factory=list)
    throttled: int = 0

    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("provide-client-params.ec2.RunInstances", self._params)
        events.register("after-call.ec2.RunInstances", self._after)
        return client

    def _params(self, params: dict, **_: Any) -> None:
        self.calls.append(dict(params))
        code = self.fault(params)
        if code is not None:
            if code == "RequestLimitExceeded":
                self.throttled += 1
            raise aws_error(code)
        most = params.get("MaxCount", 1)
        limit = self.cap(params)
        params["MinCount"] = params["MaxCount"] = most if limit is None else min(most, limit)

    def _after(self, parsed: dict, **_: Any) -> None:
        if self.crash_after(self.calls[-1]):
            raise RuntimeError("the process died between the launch and the ledger write")


class ImdsStandIn:
    """A stand-in of the instance metadata service: ``local-ipv4``, and the spot notice (404
    until ``notice`` is set).

    ``tokens``: IMDSv2 (a token PUT answers a token, a GET without a valid one gets 401);
    otherwise the PUT is refused with ``refusal`` and GETs need no token (IMDSv1).
    """

    def __init__(self, tokens: bool = True, refusal: int = 405, local_ipv4: str = "127.0.0.1"):
        self.notice: dict | None = None
        self.local_ipv4 = local_ipv4
        self.tokens = tokens
        self.refusal = refusal
        self.issued: set[str] = set()
        # (method, path, headers); headers as http.server reads them: names in any case
        self.requests: list[tuple[str, str, Message]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                stand_in.requests.append(("PUT", self.path, self.headers))
                if self.path != TOKEN_PATH or not stand_in.tokens:
                    self.send_error(stand_in.refusal if self.path == TOKEN_PATH else 404)
                    return
                token = f"token-{len(stand_in.issued)}"
                stand_in.issued.add(token)
                self._answer(200, token.encode())

            def do_GET(self) -> None:
                stand_in.requests.append(("GET", self.path, self.headers))
                if stand_in.tokens and self.headers.get(TOKEN_HEADER) not in stand_in.issued:
                    self.send_error(401)
                elif self.path == LOCAL_IPV4_PATH:
                    self._answer(200, stand_in.local_ipv4.encode())
                elif self.path != NOTICE_PATH or stand_in.notice is None:
                    self.send_error(404)
                else:
                    self._answer(200, json.dumps(stand_in.notice).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
