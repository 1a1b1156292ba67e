"""The nodes' exact package list (the lock) and its hash: the pre-flight, run before anything is billed.

The spec's packages, and the wheels built here, are resolved with ``uv pip compile`` for
the nodes' platform (Linux x86_64 with glibc 2.35, the kernel's Python minor). What cannot exist there is
found here, in one line naming the package and the fix, before a machine is launched. A
node installs the lock with ``uv pip sync``: no resolver runs on a node.

The hash names the environment in the cluster's object store: the same lock, the same
archive. A wheel built here enters the hash by its contents, not by its file's path.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import subprocess
from dataclasses import dataclass

from jupyter_burst import config
from jupyter_burst.clusters.env.spec import EnvSpec, canonical, read_spec
from jupyter_burst.clusters.env.uv_tool import index_arguments, uv
from jupyter_burst.clusters.env.wheels import Wheel, wheel_for
from jupyter_burst.errors import ClusterError

# uv's name for the nodes' platform: glibc 2.35, Ubuntu 22.04's, the default images' (the
# Deep Learning Base AMI and Canonical's); a newer image runs these wheels too.
PLATFORM = "x86_64-manylinux_2_35"
PLATFORM_WORDS = "Linux x86_64"
_COMPILE_SECONDS = 300
# Where a node keeps the wheels built here; the boot script writes the lock with it expanded.
NODE_WHEELS = "${ROOT}/wheels"
_NO_WHEEL = re.compile(
    r"Because (?:only )?([A-Za-z0-9_.\-]+)(?:==|<=|>=)?([^\s,]*) has no wheels with a matching platform tag"
)
_NO_VERSION = re.compile(r"Because there is no version of ([A-Za-z0-9_.\-]+)==?([^\s,]*)")
_NOT_FOUND = re.compile(
    r"Because ([A-Za-z0-9_.\-]+) was not found in the (?:package registry|provided package locations)"
)


@dataclass(frozen=True)
class NodeLock:
    """What every node of a cluster installs, exactly, and the name of that environment."""

    spec: EnvSpec
    lines: tuple[str, ...]  # requirements, one per line; local wheels under NODE_WHEELS
    wheels: tuple[Wheel, ...]  # to ship with the lock
    hash: str
    notes: tuple[str, ...] = ()  # one line each, said before the launch

    @property
    def python(self) -> str:
        return self.spec.python

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def said(self) -> list[str]:
        """The pre-flight's lines: every difference the nodes will have."""
        return [*self.spec.left_out, *self.spec.differences, *self.notes]


def node_wheel_path(wheel: Wheel) -> str:
    """Where a node keeps a wheel built here, under NODE_WHEELS: by its contents, so that a
    changed package is a changed requirement to ``uv pip sync`` even at the same version."""
    return f"{wheel.identity[:16]}/{wheel.path.name}"


def cache_dir(state_dir: pathlib.Path) -> pathlib.Path:
    configured = config.get("env.cache-dir", None)
    return pathlib.Path(configured) if configured else state_dir / "env"


def prepare(state_dir: pathlib.Path, gpu: bool = True, spec: EnvSpec | None = None) -> NodeLock:
    """The lock for this kernel's environment; raises ClusterError with the fix when the
    nodes cannot have it."""
    spec = spec or read_spec(gpu=gpu)
    cache = cache_dir(state_dir)
    wheels = tuple(wheel_for(dist, cache) for dist in spec.local)
    asked = [*spec.requirements, *(f"{w.name} @ {w.path.resolve().as_uri()}" for w in wheels)]
    if "pip" not in spec.packages:
        asked.append("pip")  # %pip in a cell runs pip on the nodes
    key = hashlib.sha256(
        json.dumps([spec.python, PLATFORM, sorted(asked), index_arguments()]).encode()
    ).hexdigest()[:24]
    kept = cache / "locks" / f"{key}.json"
    try:
        lines, notes = json.loads(kept.read_text())
    except (OSError, ValueError):
        lines, notes = _compile(spec, asked)
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps([lines, notes]))
    by_path = {w.path.resolve().as_uri(): w for w in wheels}
    node_lines, named = [], []
    for line in lines:
        name, _, rest = line.partition(" @ ")
        wheel = by_path.get(rest.strip())
        if wheel is not None:
            node_lines.append(f"{name} @ file://{NODE_WHEELS}/{node_wheel_path(wheel)}")
            named.append(f"{name} @ wheel:{wheel.identity}")
        else:
            node_lines.append(line)
            named.append(line)
    digest = hashlib.sha256(
        json.dumps({"python": spec.python, "platform": PLATFORM, "lock": named}).encode()
    ).hexdigest()
    return NodeLock(spec, tuple(node_lines), wheels, digest[:32], tuple(notes))


def preflight(state_dir: pathlib.Path, gpu: bool = True) -> NodeLock:
    """:func:`prepare`, with what the user must know said first: the environment's hash and
    each difference the nodes will have, one line each. Every provider runs it before it
    starts anything, so a refusal costs nothing."""
    lock = prepare(state_dir, gpu=gpu)
    print(f"burst: environment {lock.hash[:12]} ({lock.spec.describe()})", flush=True)
    for line in lock.said():
        print(f"burst: environment: {line}", flush=True)
    return lock


def _compile(spec: EnvSpec, asked: list[str]) -> tuple[list[str], list[str]]:
    """uv's resolution for the nodes; the pins as they are when the set does not resolve
    together (a notebook environment pip left inconsistent), said in one line."""
    done = _run_compile(spec, asked, no_deps=False)
    if done.returncode == 0:
        return _pins(done.stdout), []
    first = _reason(done.stderr)
    alone = _run_compile(spec, asked, no_deps=True)
    if alone.returncode != 0:
        raise _refusal(alone.stderr)
    return _pins(alone.stdout), [
        f"the notebook's packages do not resolve together ({first}); the nodes get exactly "
        "its versions, without a dependency check"
    ]


def _run_compile(spec: EnvSpec, asked: list[str], no_deps: bool) -> subprocess.CompletedProcess:
    command = [
        uv(), "pip", "compile", "-", "--python-version", spec.python, "--python-platform",
        PLATFORM, "--no-header", "--no-annotate", "--quiet", *index_arguments(),
    ]  # fmt: skip
    if no_deps:
        command.append("--no-deps")
    return subprocess.run(
        command,
        input="\n".join(asked) + "\n",
        capture_output=True,
        text=True,
        timeout=_COMPILE_SECONDS,
        check=False,
    )


def _pins(output: str) -> list[str]:
    return sorted(
        (ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("#")),
        key=lambda ln: canonical(re.split(r"[=@ ]", ln, maxsplit=1)[0]),
    )


def _reason(stderr: str) -> str:
    """uv's reason, in one line."""
    text = " ".join(ln.strip(" ×╰─▶│") for ln in stderr.splitlines() if ln.strip())
    text = re.sub(r"\s+", " ", text).strip()
    found = re.search(r"Because .*?(?=, we can conclude|$)", text)
    return (found.group(0) if found else text)[:400] or "uv gave no reason"


def _refusal(stderr: str) -> ClusterError:
    reason = _reason(stderr)
    for pattern, words in (
        (_NO_WHEEL, "has no wheel for Linux (and no source to build one) in the package index"),
        (_NO_VERSION, "is not in the package index the nodes install from"),
        (_NOT_FOUND, "is not in the package index the nodes install from"),
    ):
        found = pattern.search(reason)
        if found:
            name = canonical(found.group(1))
            version = found.group(2) if found.lastindex and found.lastindex >= 2 else ""
            return ClusterError(
                f"{name} {version}".strip() + f" {words}, so the {PLATFORM_WORDS} nodes cannot "
                f"install it; nothing was launched: uninstall it here if no cell needs it, or "
                f"leave it out with burst.env.exclude: [{name}]"
            )
    return ClusterError(
        f"the nodes' packages cannot be resolved for {PLATFORM_WORDS} ({reason}); nothing was "
        "launched: fix the notebook's environment, or leave the package out with burst.env.exclude"
    )
