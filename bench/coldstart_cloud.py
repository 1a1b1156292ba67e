"""Cold start on the emulated cloud: a ``%%burst provider=aws`` cell with no cluster, until its
first output reaches the notebook, through a real kernel.

The tests' emulated cloud (moto and tests/vm_emulator.py) with bare machines, each with its
own empty uv cache (nothing shared between machines, as on EC2); the kernel runs in a
notebook environment of its own (tests/notebook_env.py), its package index the wheelhouse.
Two ways, ``reps`` times each, a new cluster each time:

- no archive: the bucket holds no environment, so the head builds it with uv;
- cached: the archive the first run stored is unpacked.

Timed from the emulated machine's own boot (when the emulator saw the instance: its user
data starts then; a real instance adds its image's boot, tens of seconds, before that) to
the cell's first output in the kernel; the phases come from the boot log's ``burst-phase:``
lines. Needs ``make wheelhouse``.
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
import time

from bench.common import Report, Row, median, p90

TARGET_SECONDS = 30.0
REGION = "us-east-1"
_CELL = "%%burst provider=aws cluster={name}\nprint('first output', flush=True)\n"
_PHASE = re.compile(r"^burst-phase: ([0-9.]+) (.*)$", re.M)


def run(reps: int) -> Report:
    from jupyter_burst.clusters.aws import sdk
    from tests.aws_fakes import CREDENTIALS, moto_server
    from tests.harness import burst_kernel
    from tests.notebook_env import KERNEL_PYTHON, index_env, make_notebook_env
    from tests.vm_emulator import VmEmulator

    report = Report()
    with tempfile.TemporaryDirectory(prefix="burst-bench-cloud-") as tmp:
        root = pathlib.Path(tmp)
        python = make_notebook_env(root / "notebook", root / "uv-cache")
        saved = {k: os.environ.get(k) for k in CREDENTIALS}
        os.environ.update(CREDENTIALS)  # dummy ones: a real key is never used here
        try:
            with moto_server() as endpoint:
                ec2 = sdk.client("ec2", REGION, endpoint_url=endpoint)
                s3 = sdk.client("s3", REGION, endpoint_url=endpoint)
                image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]
                env = {
                    **CREDENTIALS,
                    "AWS_ENDPOINT_URL": endpoint,
                    "DASK_BURST__AWS__BUCKET": "burst-bench",
                    "DASK_BURST__AWS__CLIENT_CIDR": "127.0.0.1/32",
                    "DASK_BURST__AWS__IMAGE": image["ImageId"],
                    "DASK_BURST__AWS__REGIONS": REGION,
                    **index_env(root / "env-cache"),
                    KERNEL_PYTHON: str(python),
                }
                (root / "work").mkdir()
                with (
                    VmEmulator(
                        lambda r: ec2, (REGION,), root / "vms", shared_uv_cache=False
                    ) as vms,
                    burst_kernel(root / "state", root / "work", env) as kernel,
                ):
                    starts = {"no archive": [], "cached": []}
                    for n in range(2 * reps):
                        way = "no archive" if n < reps else "cached"
                        if way == "no archive":
                            _forget_archives(s3)
                        elif n == reps:
                            _await_archive(s3)
                        starts[way].append(_one_start(kernel, vms, ec2, f"c{n}"))
                    for way, runs in starts.items():
                        report.rows += _rows(way, runs, reps)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return report


def _one_start(kernel, vms, ec2, name: str) -> dict[str, float]:
    msg_id = kernel.kc.execute(_CELL.format(name=name))
    submitted = time.time()
    first = None
    said: dict[str, float] = {}  # the kernel's own lines, by how they begin: when each came
    for msg in kernel.messages(msg_id, 600):
        if msg["msg_type"] == "stream":
            text = msg["content"]["text"]
            for mark in ("burst: launching", "burst: environment ", "burst: image"):
                if mark in text:
                    said.setdefault(mark, time.time())
            if "first output" in text:
                first = first or time.time()
        if msg["msg_type"] == "error":
            raise RuntimeError(f"the cold-start cell failed: {msg['content']['evalue']}")
    kernel.kc.get_shell_msg(timeout=10)
    if first is None:
        raise RuntimeError("the cold-start cell printed nothing")
    (instance,) = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if any(t["Value"].startswith(f"{name}-") for t in i.get("Tags", []))
    ]
    booted = vms.booted_at[instance["InstanceId"]]
    log = (vms.machines[instance["InstanceId"]].root / "console.log").read_text()
    phases = {what: float(when) for when, what in _PHASE.findall(log)}
    env_start = phases.get("environment", booted)
    env_done = next(
        (
            t
            for what, t in phases.items()
            if what.startswith("environment ") and what != "environment building"
        ),
        env_start,
    )
    kernel.ok(f"%burst down {name}", timeout=120)
    quoted = said.get("burst: launching", submitted)
    checked = said.get("burst: environment ", quoted)
    return {
        "quote": quoted - submitted,  # offers, the plan, the daily budget
        "pre-flight": checked - quoted,  # the image, the environment's lock
        "launch": booted - checked,  # certificates, security group, run_instances, seen booting
        "keys": env_start - booted,
        "environment": env_done - env_start,
        "node": phases.get("node starting", env_done) - env_done,
        "to output": first - phases.get("node starting", env_done),
        "total": first - booted,
    }


def _rows(way: str, runs: list[dict[str, float]], reps: int) -> list[Row]:
    totals = [r["total"] for r in runs]
    parts = " / ".join(
        f"{median([r[k] for r in runs]):.1f}" for k in ("keys", "environment", "node", "to output")
    )
    return [
        Row(
            "cold start, emulated cloud",
            f"{way}: machine boot -> first output, median of {reps} (p90)",
            f"{median(totals):.1f} s ({p90(totals):.1f} s)",
            f"<= {TARGET_SECONDS:g} s",
            median(totals) <= TARGET_SECONDS,
        ),
        Row(
            "cold start, emulated cloud",
            f"  {way}: keys / environment / keys unpacked / node start to output (medians, s)",
            parts,
        ),
        Row(
            "cold start, emulated cloud",
            f"  {way}: before the boot: quote / pre-flight / launch (medians, s)",
            " / ".join(
                f"{median([r[k] for r in runs]):.1f}" for k in ("quote", "pre-flight", "launch")
            ),
        ),
    ]


def _forget_archives(s3) -> None:
    try:
        listed = s3.list_objects_v2(Bucket="burst-bench", Prefix="jupyter-burst/envs/")
    except Exception:
        return  # no bucket yet: nothing stored
    for item in listed.get("Contents", []):
        s3.delete_object(Bucket="burst-bench", Key=item["Key"])


def _await_archive(s3, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = s3.list_objects_v2(Bucket="burst-bench", Prefix="jupyter-burst/envs/")
        if listed.get("Contents"):
            return
        time.sleep(0.5)
    raise RuntimeError("no node stored the environment's archive")
