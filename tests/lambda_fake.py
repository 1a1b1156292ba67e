"""A local fake of Lambda Cloud's REST API (v1), for the ``lambda`` provider's tests.

Built from the API's published specification (cloud.lambda.ai/api/v1/docs): its paths,
the ``{"data": ...}`` envelope of an answer, the ``{"error": {"code", "message",
"suggestion"}}`` of a refusal, Bearer or Basic authentication with the API key, and its rate
limits (about one request a second, one launch in ten seconds; exceeding either is a 429
with ``Retry-After``). The limits are the fake's to set, so tests can keep them short.

Paths: ``GET /instance-types``, ``GET /instances``, ``GET /instances/{id}``,
``GET|POST /ssh-keys``, ``POST /instance-operations/launch``,
``POST /instance-operations/terminate``, ``GET|POST /firewall-rulesets`` and
``PATCH|DELETE /firewall-rulesets/{id}``. Launching checks the type, the region's capacity,
exactly one SSH key name and the rulesets (of the launch's region), as the API does; a
ruleset a live instance holds cannot be deleted. Instances change status here (booting,
then active; terminated); with ``machines`` (tests/lambda_machines.py) each also boots.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "secret_burst-tests_" + "0" * 32
_SHUTDOWN_SECONDS = 0.2  # from a terminate's answer to its machine's power-off

# What GET /instance-types says of each type (prices in cents an hour), and where it has capacity.
TYPES = {
    "gpu_1x_a10": ("1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 75, 30, 200, 1),
    "gpu_1x_h100_pcie": ("1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 249, 26, 200, 1),
    "gpu_8x_a100": ("8x A100 (40 GB SXM4)", "A100 (40 GB SXM4)", 1032, 124, 1800, 8),
    "gpu_8x_h100_sxm5": ("8x H100 (80 GB SXM5)", "H100 (80 GB SXM5)", 2392, 208, 1800, 8),
    "gpu_8x_v100": ("8x Tesla V100 (16 GB)", "Tesla V100 (16 GB)", 440, 92, 448, 8),
    "cpu_4x_general": ("4x CPU", "", 20, 4, 16, 0),
}
REGIONS = {
    "us-east-1": "Virginia, USA",
    "us-west-1": "California, USA",
    "europe-central-1": "Germany",
}


@dataclass
class Instance:
    id: str
    name: str
    type_name: str
    region: str
    ssh_key_names: list[str]
    tags: list[dict[str, str]]
    user_data: str
    launched: float  # the wall clock's time of the launch, and of the termination (as billed)
    status: str = "booting"
    terminated: float | None = None
    ip: str = "127.0.0.1"
    firewall_rulesets: list[str] = field(default_factory=list)


@dataclass
class LambdaFake:
    """The API's state (instances, capacity) and the server that answers for it."""

    request_spacing: float = 1.0
    launch_spacing: float = 10.0
    capacity: dict[str, set[str]] = field(
        default_factory=lambda: {
            "gpu_1x_a10": {"us-east-1", "us-west-1"},
            "gpu_1x_h100_pcie": {"us-west-1"},
            "gpu_8x_a100": {"us-east-1"},
            "gpu_8x_h100_sxm5": set(),  # sold out everywhere
            "gpu_8x_v100": {"europe-central-1"},
            "cpu_4x_general": {"us-east-1"},
        }
    )
    # Prices a test sets (cents an hour), over TYPES' own.
    price_cents: dict[str, int] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    ssh_keys: list[dict[str, str]] = field(
        default_factory=lambda: [{"id": "k0", "name": "burst", "public_key": "ssh-ed25519 AAAA"}]
    )
    firewall_rulesets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (monotonic time, method, path, status) of every request, for the pacing tests.
    requests: list[tuple[float, str, str, int]] = field(default_factory=list)
    _last: float = -1e9
    _last_launch: float = -1e9
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    # Where launched instances boot as machines (tests/lambda_machines.py); None: books only.
    machines: Any = None
    # A test's faults: fault(method, path) -> None, or (when, status, code): the answer is
    # that error, "before" doing what was asked or "after" doing it (a reply lost on the way).
    fault: Any = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def start(self) -> LambdaFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._answer(self, "GET")

            def do_POST(self) -> None:
                fake._answer(self, "POST")

            def do_PATCH(self) -> None:
                fake._answer(self, "PATCH")

            def do_DELETE(self) -> None:
                fake._answer(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.machines is not None:
            self.machines.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # answering ------------------------------------------------------------------------

    def _answer(self, http: BaseHTTPRequestHandler, method: str) -> None:
        path = http.path.split("?", 1)[0].removeprefix("/api/v1")
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        with self._lock:
            status, headers, payload = self._handle(http.headers, method, path, body)
            self.requests.append((time.monotonic(), method, path, status))
        data = json.dumps(payload).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            http.send_header(name, value)
        http.end_headers()
        http.wfile.write(data)

    def _handle(self, headers, method: str, path: str, body: bytes):
        if not _authorized(headers.get("Authorization", "")):
            return _error(
                401, "global/invalid-api-key", "API key was invalid, expired, or deleted.",
                "Check your API key or create a new one, then try again.",
            )  # fmt: skip
        now = time.monotonic()
        launch = method == "POST" and path == "/instance-operations/launch"
        wait = max(self._last + self.request_spacing - now,
                   self._last_launch + self.launch_spacing - now if launch else 0.0)  # fmt: skip
        if wait > 0:
            status, _, payload = _error(429, "global/too-many-requests", "Too many requests.")
            return status, {"Retry-After": f"{wait:.3f}"}, payload
        self._last = now
        if launch:
            self._last_launch = now
        self._advance()
        try:
            request = json.loads(body) if body else {}
        except ValueError:
            return _error(400, "global/invalid-parameters", "The request body is not JSON.")
        chosen = self.fault(method, path) if self.fault is not None else None
        if chosen is None:
            return self._route(method, path, request, launch)
        when, status, code = chosen
        if when == "after":
            self._route(method, path, request, launch)
        return _error(status, code, f"Injected {code}.")

    def _route(self, method: str, path: str, request: dict[str, Any], launch: bool):
        if method == "GET" and path == "/instance-types":
            return 200, {}, {"data": self._types()}
        if method == "GET" and path == "/instances":
            return 200, {}, {"data": [self._show(i) for i in self.instances.values()
                                      if i.status != "terminated"]}  # fmt: skip
        if method == "GET" and path.startswith("/instances/"):
            found = self.instances.get(path.removeprefix("/instances/"))
            if found is None:
                return _error(
                    404, "global/object-does-not-exist", "Specified instance does not exist."
                )
            return 200, {}, {"data": self._show(found)}
        if method == "GET" and path == "/ssh-keys":
            return 200, {}, {"data": self.ssh_keys}
        if method == "POST" and path == "/ssh-keys":
            return self._add_ssh_key(request)
        if launch:
            return self._launch(request)
        if method == "POST" and path == "/instance-operations/terminate":
            return self._terminate(request)
        if path == "/firewall-rulesets" and method in ("GET", "POST"):
            if method == "GET":
                return 200, {}, {"data": [self._ruleset(r) for r in self.firewall_rulesets]}
            return self._add_ruleset(request)
        if path.startswith("/firewall-rulesets/"):
            return self._change_ruleset(method, path.removeprefix("/firewall-rulesets/"), request)
        return _error(404, "global/object-does-not-exist", f"No such path: {method} {path}")

    def _types(self) -> dict[str, Any]:
        return {
            name: {
                "instance_type": {
                    "name": name,
                    "description": description,
                    "gpu_description": gpu,
                    "price_cents_per_hour": self.price_cents.get(name, cents),
                    "specs": {
                        "vcpus": vcpus,
                        "memory_gib": memory,
                        "storage_gib": 512,
                        "gpus": gpus,
                    },
                },
                "regions_with_capacity_available": [
                    {"name": r, "description": REGIONS[r]}
                    for r in sorted(self.capacity.get(name, ()))
                ],
            }
            for name, (description, gpu, cents, vcpus, memory, gpus) in TYPES.items()
        }

    def _add_ssh_key(self, request: dict[str, Any]):
        name, public = request.get("name"), request.get("public_key")
        if not name or any(k["name"] == name for k in self.ssh_keys):
            return _error(400, "global/invalid-parameters", "SSH key name is missing or in use.")
        if not public:  # Lambda would make a pair and return its private half: never asked for
            return _error(400, "global/invalid-parameters", "This fake needs a public key.")
        key = {"id": uuid.uuid4().hex, "name": name, "public_key": public}
        self.ssh_keys.append(key)
        return 200, {}, {"data": key}

    def _launch(self, request: dict[str, Any]):
        name, region = request.get("instance_type_name"), request.get("region_name")
        keys = request.get("ssh_key_names")
        if name not in TYPES or region not in REGIONS:
            return _error(400, "global/invalid-parameters", "Invalid instance type or region.")
        if not isinstance(keys, list) or len(keys) != 1:
            return _error(
                400, "global/invalid-parameters", "Exactly one SSH key must be specified."
            )
        if keys[0] not in {k["name"] for k in self.ssh_keys}:
            return _error(400, "global/invalid-parameters", f"SSH key {keys[0]!r} does not exist.")
        rulesets = [str(r.get("id")) for r in request.get("firewall_rulesets") or []]
        for ruleset in rulesets:
            if self.firewall_rulesets.get(ruleset, {}).get("region") != region:
                return _error(
                    400, "global/invalid-parameters",
                    f"Firewall ruleset {ruleset!r} does not exist in {region}.",
                )  # fmt: skip
        if region not in self.capacity.get(name, ()):
            return _error(
                400, "instance-operations/launch/insufficient-capacity",
                "Not enough capacity to fulfill launch request.",
                "Choose an instance type with more availability, or try again later.",
            )  # fmt: skip
        ids = []
        for _ in range(int(request.get("quantity") or 1)):
            instance = Instance(
                id=uuid.uuid4().hex, name=str(request.get("name") or ""), type_name=name,
                region=region, ssh_key_names=list(keys), tags=list(request.get("tags") or []),
                user_data=str(request.get("user_data") or ""), launched=time.time(),
                firewall_rulesets=rulesets,
            )  # fmt: skip
            if self.machines is not None:
                public = next(k["public_key"] for k in self.ssh_keys if k["name"] == keys[0])
                instance.ip = self.machines.boot(instance.id, public, instance.user_data)
            self.instances[instance.id] = instance
            ids.append(instance.id)
        return 200, {}, {"data": {"instance_ids": ids}}

    def _add_ruleset(self, request: dict[str, Any]):
        name, region, rules = request.get("name"), request.get("region"), request.get("rules")
        if not name or len(name) > 64 or region not in REGIONS or not isinstance(rules, list):
            return _error(400, "global/invalid-parameters", "Invalid firewall ruleset.")
        if not all(_valid_rule(rule) for rule in rules):
            return _error(400, "global/invalid-parameters", "Invalid firewall rule.")
        ruleset = {"id": uuid.uuid4().hex, "name": name, "region": region, "rules": rules,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        self.firewall_rulesets[ruleset["id"]] = ruleset
        return 200, {}, {"data": self._ruleset(ruleset["id"])}

    def _change_ruleset(self, method: str, ruleset: str, request: dict[str, Any]):
        if ruleset not in self.firewall_rulesets:
            return _error(
                404, "global/object-does-not-exist", "Firewall ruleset does not exist.",
                "Check your firewall ruleset ID and try again.",
            )  # fmt: skip
        if method == "GET":
            return 200, {}, {"data": self._ruleset(ruleset)}
        if method == "PATCH":
            rules = request.get("rules")
            if rules is not None:
                if not isinstance(rules, list) or not all(_valid_rule(r) for r in rules):
                    return _error(400, "global/invalid-parameters", "Invalid firewall rule.")
                self.firewall_rulesets[ruleset]["rules"] = rules
            return 200, {}, {"data": self._ruleset(ruleset)}
        if method == "DELETE":
            if self._ruleset(ruleset)["instance_ids"]:
                return _error(
                    400, "firewall-rulesets/firewall-ruleset-in-use",
                    "Firewall ruleset is in use by one or more instances.",
                    "Terminate all instances that are using the ruleset before deleting it.",
                )  # fmt: skip
            del self.firewall_rulesets[ruleset]
            return 200, {}, {"data": {}}
        return _error(404, "global/object-does-not-exist", f"No such path: {method}")

    def _ruleset(self, ruleset: str) -> dict[str, Any]:
        found = self.firewall_rulesets[ruleset]
        users = [i.id for i in self.instances.values()
                 if ruleset in i.firewall_rulesets and i.status != "terminated"]  # fmt: skip
        return {**found, "region": {"name": found["region"],
                                    "description": REGIONS[found["region"]]},
                "instance_ids": users}  # fmt: skip

    def _terminate(self, request: dict[str, Any]):
        ids = request.get("instance_ids") or []
        missing = [i for i in ids if i not in self.instances]
        if missing:
            return _error(
                404, "global/object-does-not-exist", f"Instance {missing[0]} does not exist."
            )
        done = []
        for i in ids:
            instance = self.instances[i]
            if instance.status != "terminated":
                instance.status, instance.terminated = "terminated", time.time()
                if self.machines is not None:
                    # As Lambda does: the answer first, the machine shuts down after it (a
                    # head terminating its own cluster hears the answer).
                    threading.Timer(_SHUTDOWN_SECONDS, self.machines.power_off, [i]).start()
            done.append(self._show(instance))
        return 200, {}, {"data": {"terminated_instances": done}}

    def _advance(self) -> None:
        for instance in self.instances.values():
            if instance.status == "booting":
                instance.status = "active"  # the next look finds it up

    def _show(self, i: Instance) -> dict[str, Any]:
        description, gpu, cents, vcpus, memory, gpus = TYPES[i.type_name]
        return {
            "id": i.id, "name": i.name, "ip": i.ip, "private_ip": i.ip,
            "status": i.status, "ssh_key_names": i.ssh_key_names, "file_system_names": [],
            "region": {"name": i.region, "description": REGIONS[i.region]},
            "instance_type": {"name": i.type_name, "description": description,
                              "gpu_description": gpu,
                              "price_cents_per_hour": self.price_cents.get(i.type_name, cents),
                              "specs": {"vcpus": vcpus, "memory_gib": memory, "storage_gib": 512,
                                        "gpus": gpus}},
            "hostname": f"{i.id[:8]}.cloud.lambda.ai", "is_reserved": False, "tags": i.tags,
        }  # fmt: skip


def _valid_rule(rule: Any) -> bool:
    """A FirewallRule as the specification has it: protocol, source network, description,
    and a port range for every protocol but icmp."""
    if not isinstance(rule, dict) or rule.get("protocol") not in ("tcp", "udp", "icmp", "all"):
        return False
    if not isinstance(rule.get("source_network"), str) or "description" not in rule:
        return False
    ports = rule.get("port_range")
    if rule["protocol"] == "icmp":
        return ports is None
    return isinstance(ports, list) and len(ports) == 2 and 1 <= ports[0] <= ports[1] <= 65535


def _authorized(header: str) -> bool:
    scheme, _, value = header.partition(" ")
    if scheme == "Bearer":
        return value == KEY
    if scheme == "Basic":
        try:
            return base64.b64decode(value).decode().partition(":")[0] == KEY
        except ValueError:
            return False
    return False


def _error(status: int, code: str, message: str, suggestion: str | None = None):
    error = {"code": code, "message": message}
    if suggestion:
        error["suggestion"] = suggestion
    return status, {}, {"error": error}
