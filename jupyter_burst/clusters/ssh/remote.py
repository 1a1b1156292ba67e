"""The host side of the ``ssh`` provider: a stdlib-only script, run as ``python3 -c SOURCE ...``.

It is sent as the ssh command (it holds no secret); the node's key bundle arrives on its
standard input. Its commands, each answering one JSON line on stdout:

``start ROOT NAME ROLE TIMEOUT VERSIONS -- NODE-ARGS``
    unpack the bundle into ROOT/tls (0700), start ``python -m jupyter_burst.node`` in a
    session of its own (so it outlives the ssh connection), and for the head wait until its
    scheduler has written its record: ``{"pid", "gpus", "root", "scheduler"?}``.
``alive ROOT SID``
    ``{"alive": bool}``: whether any process of the node still runs (a zombie does not: a
    host whose init reaps late must not keep a cluster alive).
``stop ROOT SID GRACE``
    SIGTERM the node's processes (the node closes its workers first), SIGKILL what is left
    after GRACE seconds, and answer once nothing is left: ``{"stopped": bool}``; the node's
    key is then removed (its logs stay).

A node's processes are those of its session (the node leads it) that carry
``JUPYTER_BURST_NODE=ROOT`` in their environment (set when the node starts, inherited by
its worker processes): a process id reused since is never signalled.

Failures answer ``{"error": "..."}`` and exit 3.
"""

import importlib.metadata
import json
import os
import pathlib
import shlex
import shutil
import signal
import subprocess
import sys
import time

_MARK = "JUPYTER_BURST_NODE"
_OPTIONAL = ("torch",)  # a host without it runs cells that do not import it


def _answer(value, code=0):
    print(json.dumps(value), flush=True)
    sys.exit(code)


def _fail(message):
    _answer({"error": message}, 3)


def _members(root, sid):
    """The node's live (non-zombie) processes: of the session ``sid``, and marked with ``root``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X") and _ours(entry, root):
            found.append(int(entry))
    return found


def _ours(pid, root):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{_MARK}={root}".encode() + b"\0" in f.read()
    except OSError:
        return False


def _signal(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _version_mismatches(wanted):
    """``{name: "name have (notebook: version)"}`` for each package not at the notebook's version."""
    wrong = {}
    for name, version in sorted(wanted.items()):
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version and not (have is None and name in _OPTIONAL):
            wrong[name] = f"{name} {have or 'missing'} (notebook: {version})"
    return wrong


def _install_command(wanted, names):
    """The pip command that puts the notebook's versions of ``names`` here: the runtime only,
    as an AWS node installs it (jupyter-burst without its lab extra)."""
    pins = [f"{name}=={wanted[name]}" for name in sorted(names)]
    return shlex.join([sys.executable, "-m", "pip", "install", *pins])


def _gpus():
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _tail(path, lines=3):
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return " | ".join(text[-lines:])[-400:] or "no output"


def start(root, name, role, timeout, versions, node_args):
    os.umask(0o077)  # the key, the logs and the node's state: this user's only
    root = pathlib.Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    wanted = json.loads(versions)
    wrong = _version_mismatches(wanted)
    if wrong:
        _fail(
            f"{sys.executable} has {', '.join(wrong.values())}; install the notebook's "
            f"versions there with: {_install_command(wanted, wrong)} (or point python= at "
            f"an environment that has them)"
        )
    bundle = sys.stdin.buffer.read()
    unpack = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_burst.clusters.tls",
            "unpack",
            "/dev/stdin",
            str(root / "tls"),
        ],
        input=bundle,
        capture_output=True,
    )
    if unpack.returncode != 0:
        last = (unpack.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        _fail(f"could not unpack the node's keys with {sys.executable}: {last}")
    state = root / "state"
    state.mkdir(exist_ok=True)
    log_path = root / "node.log"
    command = [
        sys.executable, "-m", "jupyter_burst.node", *node_args,
        "--state-dir", str(state), "--tls-dir", str(root / "tls"),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        node = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: it outlives this ssh connection
            cwd=root,
            env=dict(os.environ, **{_MARK: str(root)}),
        )
    (root / "node.pid").write_text(str(node.pid))
    answer = {"pid": node.pid, "gpus": _gpus(), "root": str(root)}
    if role != "head":
        _answer(answer)
    # The head's record, keyed by provider and name (clusters/records.py); NAME.json before.
    records = [state / "clusters" / f"{name}@ssh.json", state / "clusters" / f"{name}.json"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            _fail(f"the node exited ({node.returncode}): {_tail(log_path)}; log: {log_path}")
        found = None
        for record in records:
            try:
                found = json.loads(record.read_text())
                break
            except (OSError, ValueError):
                continue
        if found and found.get("pid") == node.pid:
            _answer(dict(answer, scheduler=found["scheduler"]))
        time.sleep(0.05)
    _signal(_members(str(root), node.pid), signal.SIGKILL)
    _fail(f"the node's scheduler did not come up within {timeout:g} s: {_tail(log_path)}")


def stop(root, sid, grace):
    # The node first: it closes its workers and tells the worker nodes to stop.
    _signal(
        [pid for pid in _members(root, sid) if pid == sid] or _members(root, sid), signal.SIGTERM
    )
    deadline = time.monotonic() + grace
    while _members(root, sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal(_members(root, sid), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _members(root, sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    stopped = not _members(root, sid)
    if stopped:
        shutil.rmtree(pathlib.Path(root) / "tls", ignore_errors=True)  # its cluster is over
    _answer({"stopped": stopped})


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "start":
        split = args.index("--")
        root, name, role, timeout, versions = args[:split]
        start(root, name, role, float(timeout), versions, args[split + 1 :])
    elif command == "alive":
        _answer({"alive": bool(_members(args[0], int(args[1])))})
    elif command == "stop":
        stop(args[0], int(args[1]), float(args[2]))
    else:
        _fail(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
