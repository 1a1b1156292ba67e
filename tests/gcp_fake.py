"""A local fake of the Compute Engine REST endpoints (v1) the ``gcp`` provider uses.

Built from the API's reference (cloud.google.com/compute/docs/reference/rest/v1): its
paths under ``/compute/v1/projects/{project}``, its resources' JSON (camelCase fields,
``labels``, ``metadata.items``, ``networkInterfaces[].accessConfigs[].natIP``), long-running
calls answered with an Operation whose ``error.errors[]`` carries what went wrong (a zone
out of a machine type: ``ZONE_RESOURCE_POOL_EXHAUSTED``; a quota: ``QUOTA_EXCEEDED``), and
an HTTP error's ``{"error": {"code", "message", "errors": [{"reason"}], "status"}}``.

Paths: instances insert/get/list/delete, aggregated instances, an instance's guest
attributes (``hostkeys/``: what the guest environment publishes), zone and global
operations get/wait, firewalls insert/get/list/delete. Each instance is RUNNING once
inserted; with ``machines`` (tests/lambda_machines.py: an sshd and the boot script of its
own) it also boots, from its ``startup-script`` metadata, letting in the key of its
``ssh-keys`` metadata, and publishes its host key. A Spot instance with a
``maxRunDuration`` and ``instanceTerminationAction: DELETE`` is deleted at that deadline.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROJECT = "burst-tests"
ZONES = ("us-central1-a", "us-central1-b", "europe-west4-a")
_INSTANCE = re.compile(
    r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/instances(?:/([^/]+))?(?:/(\w+))?$"
)
_ZONE_OP = re.compile(r"^/compute/v1/projects/([^/]+)/zones/([^/]+)/operations/([^/]+?)(/wait)?$")
_GLOBAL_OP = re.compile(r"^/compute/v1/projects/([^/]+)/global/operations/([^/]+?)(/wait)?$")
_FIREWALL = re.compile(r"^/compute/v1/projects/([^/]+)/global/firewalls(?:/([^/]+))?$")
_AGGREGATED = re.compile(r"^/compute/v1/projects/([^/]+)/aggregated/instances$")
SKUS_PATH = "/v1/services/6F81-5844-456A/skus"
PREEMPTED_PATH = "/computeMetadata/v1/instance/preempted"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
TOKEN = "ya29.burst-tests-service-account"  # what the metadata server hands a VM's account
# The Cloud Billing Catalog's Compute Engine rates the fake lists ($ per unit-hour): region ->
# part -> (on-demand, Spot). N1 with T4 and G2 with L4, in two regions.
RATES = {
    "us-central1": {
        "N1 Predefined Instance Core": (0.031611, 0.006655),
        "N1 Predefined Instance Ram": (0.004237, 0.000892),
        "Nvidia Tesla T4 GPU": (0.35, 0.14),
        "G2 Instance Core": (0.024988, 0.009995),
        "G2 Instance Ram": (0.002927, 0.001171),
        "Nvidia L4 GPU": (0.560, 0.224),
    },
    "europe-west4": {
        "N1 Predefined Instance Core": (0.034773, 0.007321),
        "N1 Predefined Instance Ram": (0.004661, 0.000981),
        "Nvidia Tesla T4 GPU": (0.37, 0.148),
    },
}


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}-00:00"


@dataclass
class ComputeFake:
    """The project's instances, firewalls and operations, and the server that answers."""

    # (zone, machine type) pairs out of capacity, and machine types over quota anywhere.
    exhausted: set[tuple[str, str]] = field(default_factory=set)
    over_quota: set[str] = field(default_factory=set)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    # When each instance was created and deleted (the wall clock), as billing counts them.
    times: dict[str, list[float]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    machines: Any = None
    # What the metadata server's instance/preempted says (one answer for every instance).
    preempted: bool = False
    # The Authorization header of each DELETE (the kernel's credentials, or a VM's token).
    authorizations: list[str] = field(default_factory=list)
    # A test's faults: fault(method, path) -> None, or (when, status, reason): the answer is
    # that error, "before" doing what was asked or "after" doing it (a reply lost on the way).
    fault: Any = None
    _ids: Any = field(default_factory=lambda: itertools.count(4_100_000_000_000_000_000))
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ComputeFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._answer(self, "GET")

            def do_POST(self) -> None:
                fake._answer(self, "POST")

            def do_DELETE(self) -> None:
                fake._answer(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._keep_deadlines, daemon=True).start()
        return self

    def _keep_deadlines(self) -> None:
        """Google deletes an instance at its maxRunDuration whether anyone asks or not."""
        while not self._stopped.wait(0.5):
            with self._lock:
                self._expire()

    def stop(self) -> None:
        self._stopped.set()
        if self.machines is not None:
            self.machines.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            return [i for i in self.instances.values() if i["status"] != "TERMINATED"]

    def stopped(self) -> list[dict[str, Any]]:
        """Instances off but not deleted: their disks still bill."""
        with self._lock:
            return [i for i in self.instances.values() if i["status"] == "TERMINATED"]

    # answering ------------------------------------------------------------------------

    def _answer(self, http: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(http.path)
        if parts.path in (PREEMPTED_PATH, TOKEN_PATH):  # the metadata server, as a VM asks it
            google = http.headers.get("Metadata-Flavor") == "Google"
            if parts.path == TOKEN_PATH:
                data = json.dumps({"access_token": TOKEN, "expires_in": 3599,
                                   "token_type": "Bearer"}).encode()  # fmt: skip
            else:
                data = b"TRUE" if self.preempted else b"FALSE"
            data = data if google else b"Forbidden"
            with self._lock:
                self.requests.append((method, parts.path, 200 if google else 403))
            http.send_response(200 if google else 403)
            http.send_header("Content-Type", "application/text")
            http.send_header("Content-Length", str(len(data)))
            http.end_headers()
            http.wfile.write(data)
            return
        query = dict(urllib.parse.parse_qsl(parts.query))
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        with self._lock:
            if method == "DELETE":
                self.authorizations.append(http.headers.get("Authorization", ""))
            self._expire()
            chosen = self.fault(method, parts.path) if self.fault is not None else None
            try:
                if chosen is not None and chosen[0] == "before":
                    status, payload = _error(chosen[1], chosen[2], f"Injected {chosen[2]}.")
                else:
                    status, payload = self._handle(method, parts.path, query, body)
                if chosen is not None and chosen[0] == "after":
                    status, payload = _error(chosen[1], chosen[2], f"Injected {chosen[2]}.")
            except ValueError as exc:
                status, payload = _error(400, "invalid", str(exc))
            self.requests.append((method, parts.path, status))
        data = json.dumps(payload).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/json")
        http.send_header("Content-Length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)

    def _handle(self, method: str, path: str, query: dict[str, str], body: bytes):
        request = json.loads(body) if body else {}
        if path == SKUS_PATH and method == "GET":  # the Cloud Billing Catalog, two pages
            skus = _skus()
            half = len(skus) // 2
            if query.get("pageToken") == "page-2":
                return 200, {"skus": skus[half:], "nextPageToken": ""}
            return 200, {"skus": skus[:half], "nextPageToken": "page-2"}
        if path.startswith("/_emulator/shutdown/"):  # a guest shutdown: the instance stops
            zone, name = path.removeprefix("/_emulator/shutdown/").split("/")
            self._stop(zone, name)
            return 200, {}
        if match := _INSTANCE.match(path):
            project, zone, name, verb = match.groups()
            if project != PROJECT or zone not in ZONES:
                return _error(
                    404, "notFound", f"The resource 'projects/{project}/zones/{zone}' was not found"
                )
            if name is None:
                if method == "POST":
                    return self._insert(zone, request)
                return 200, {"kind": "compute#instanceList", "items": [
                    i for (z, _), i in self.instances.items() if z == zone]}  # fmt: skip
            found = self.instances.get((zone, name))
            if found is None:
                return _error(
                    404,
                    "notFound",
                    f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found",
                )
            if verb == "getGuestAttributes":
                return 200, self._guest_attributes(found, query.get("queryPath", ""))
            if method == "DELETE":
                return 200, self._delete(zone, name)
            return 200, found
        if match := _AGGREGATED.match(path):
            grouped: dict[str, Any] = {f"zones/{z}": {"instances": []} for z in ZONES}
            for (zone, _), instance in self.instances.items():
                grouped[f"zones/{zone}"]["instances"].append(instance)
            return 200, {"kind": "compute#instanceAggregatedList", "items": grouped}
        if match := _ZONE_OP.match(path) or _GLOBAL_OP.match(path):
            name = match.groups()[-2]
            if name not in self.operations:
                return _error(404, "notFound", f"The resource 'operations/{name}' was not found")
            return 200, self.operations[name]
        if match := _FIREWALL.match(path):
            name = match.group(2)
            if name is None:
                if method == "POST":
                    return self._add_firewall(request)
                return 200, {"kind": "compute#firewallList", "items": list(self.firewalls.values())}
            if name not in self.firewalls:
                return _error(
                    404, "notFound", f"The resource 'global/firewalls/{name}' was not found"
                )
            if method == "DELETE":
                del self.firewalls[name]
                return 200, self._operation("delete", f"global/firewalls/{name}")
            return 200, self.firewalls[name]
        return _error(404, "notFound", f"No such path: {method} {path}")

    def _insert(self, zone: str, request: dict[str, Any]):
        name = str(request.get("name") or "")
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            return _error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'.")
        if (zone, name) in self.instances:
            return _error(409, "alreadyExists", f"The resource 'instances/{name}' already exists")
        machine_type = str(request.get("machineType") or "").rsplit("/", 1)[-1]
        target = f"zones/{zone}/instances/{name}"
        if (zone, machine_type) in self.exhausted:
            return 200, self._operation("insert", target, zone, error=(
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                f"The zone 'projects/{PROJECT}/zones/{zone}' does not have enough resources "
                "available to fulfill the request. Try a different zone, or try again later."))  # fmt: skip
        if machine_type in self.over_quota:
            return 200, self._operation("insert", target, zone, error=(
                "QUOTA_EXCEEDED", "Quota 'GPUS_ALL_REGIONS' exceeded. Limit: 0.0 globally."))  # fmt: skip
        now = time.time()
        instance = {
            **request,
            "kind": "compute#instance",
            "id": str(next(self._ids)),
            "zone": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}",
            "status": "RUNNING",
            "creationTimestamp": _stamp(now),
            "lastStartTimestamp": _stamp(now),
            "selfLink": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/{target}",
        }
        address = "127.0.0.1"
        if self.machines is not None:
            metadata = {i["key"]: i["value"] for i in request.get("metadata", {}).get("items", [])}
            public = " ".join(metadata.get("ssh-keys", "").partition(":")[2].split()[:2])
            address = self.machines.boot(
                name, public, metadata.get("startup-script", ""),
                shutdown=f"{self.url}/_emulator/shutdown/{zone}/{name}",
            )  # fmt: skip
        for interface in instance.setdefault("networkInterfaces", [{}]):
            interface["networkIP"] = address
            for access in interface.setdefault("accessConfigs", [{}]):
                access["natIP"] = address
        self.instances[(zone, name)] = instance
        self.times[name] = [now]
        return 200, self._operation("insert", target, zone)

    def _delete(self, zone: str, name: str) -> dict[str, Any]:
        # One clock read for the bill's end and the operation's: two reads drift apart by
        # tens of milliseconds on a loaded machine (a thread starts between them).
        now = time.time()
        instance = self.instances.pop((zone, name))
        if instance["status"] == "RUNNING":  # a stopped one's end was its stop
            self.times[name].append(now)
        instance["status"] = "TERMINATED"
        if self.machines is not None:
            threading.Timer(0.2, self.machines.power_off, [name]).start()
        return self._operation("delete", f"zones/{zone}/instances/{name}", zone, at=now)

    def _stop(self, zone: str, name: str) -> None:
        """Stopped (TERMINATED): the machine is off, its disk kept, as after a guest shutdown."""
        instance = self.instances.get((zone, name))
        if instance is None or instance["status"] != "RUNNING":
            return
        now = time.time()
        instance["status"] = "TERMINATED"
        instance["lastStopTimestamp"] = _stamp(now)
        self.times[name].append(now)
        if self.machines is not None:
            threading.Timer(0.2, self.machines.power_off, [name]).start()

    def _expire(self) -> None:
        """Spot instances past their maxRunDuration, with DELETE as their action, are gone."""
        now = time.time()
        for (zone, name), instance in list(self.instances.items()):
            scheduling = instance.get("scheduling") or {}
            seconds = float((scheduling.get("maxRunDuration") or {}).get("seconds") or 0)
            if seconds and scheduling.get("instanceTerminationAction") == "DELETE":
                if now >= self.times[name][0] + seconds:
                    self._delete(zone, name)

    def _guest_attributes(self, instance: dict[str, Any], path: str) -> dict[str, Any]:
        items = []
        if path.startswith("hostkeys") and self.machines is not None:
            machine = self.machines.machines.get(instance["name"])
            if machine is not None:
                kind, key = (machine.sshd.folder / "host_key.pub").read_text().split()[:2]
                items.append({"namespace": "hostkeys", "key": kind, "value": key})
        return {"kind": "compute#guestAttributes", "queryPath": path,
                "queryValue": {"items": items}}  # fmt: skip

    def _add_firewall(self, request: dict[str, Any]):
        name = str(request.get("name") or "")
        if name in self.firewalls:
            return _error(
                409, "alreadyExists", f"The resource 'global/firewalls/{name}' already exists"
            )
        self.firewalls[name] = {**request, "kind": "compute#firewall", "id": str(next(self._ids)),
                                "creationTimestamp": _stamp(time.time())}  # fmt: skip
        return 200, self._operation("insert", f"global/firewalls/{name}")

    def _operation(
        self,
        kind: str,
        target: str,
        zone: str | None = None,
        error: tuple[str, str] | None = None,
        at: float | None = None,
    ) -> dict[str, Any]:
        """A finished operation; ``at``: when it happened (now by default)."""
        at = time.time() if at is None else at
        name = f"operation-{next(self._ids)}"
        operation = {
            "kind": "compute#operation",
            "id": name.removeprefix("operation-"),
            "name": name,
            "operationType": kind,
            "status": "DONE",
            "insertTime": _stamp(at),
            "endTime": _stamp(at),
            "targetLink": f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/{target}",
            "progress": 100,
        }
        if zone:
            operation["zone"] = (
                f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}"
            )
        if error:
            operation["error"] = {"errors": [{"code": error[0], "message": error[1]}]}
            operation["httpErrorStatusCode"] = 503 if "POOL" in error[0] else 403
        self.operations[name] = operation
        return operation


def _skus() -> list[dict[str, Any]]:
    """The Catalog's SKUs for :data:`RATES`, in its shape (and a commitment SKU to skip)."""
    names = {"us-central1": "Americas", "europe-west4": "Netherlands"}
    skus = []
    for region, parts in RATES.items():
        for part, (on_demand, spot) in parts.items():
            for usage, price, prefix in (("OnDemand", on_demand, ""),
                                         ("Preemptible", spot, "Spot Preemptible ")):  # fmt: skip
                units, nanos = int(price), round(price % 1 * 1e9)
                skus.append({
                    "name": f"services/6F81-5844-456A/skus/{len(skus):04X}",
                    "description": f"{prefix}{part} running in {names[region]}",
                    "category": {"serviceDisplayName": "Compute Engine",
                                 "resourceFamily": "Compute", "resourceGroup": "GPU",
                                 "usageType": usage},
                    "serviceRegions": [region],
                    "pricingInfo": [{"pricingExpression": {
                        "usageUnit": "GiBy.h" if part.endswith("Ram") else "h",
                        "tieredRates": [{"startUsageAmount": 0,
                                         "unitPrice": {"currencyCode": "USD", "units": str(units),
                                                       "nanos": nanos}}]}}],
                })  # fmt: skip
    skus.append({"description": "Commitment v1: Cpu in Americas for 1 Year",
                 "category": {"usageType": "Commit1Yr"}, "serviceRegions": ["us-central1"]})  # fmt: skip
    return skus


def _error(status: int, reason: str, message: str):
    names = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
             409: "ALREADY_EXISTS", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
    return status, {"error": {"code": status, "message": message,
                              "errors": [{"message": message, "domain": "global", "reason": reason}],
                              "status": names.get(status, "UNKNOWN")}}  # fmt: skip
