"""The host side of the ``ssh`` provider: a stdlib-only script, run as ``python3 -c SOURCE ...``.

It is sent as the ssh command (it holds no secret); the node's key bundle, and what an
environment is built from, arrive on its standard input. The host's own Python runs only
this script: a node runs in the notebook's environment, built here once per hash. Its
commands, each answering one JSON line on stdout:

``env ENVS HASH MINOR PREFERENCE -- INDEX-ARGS``
    the environment HASH at ENVS/HASH. There already: ``{"env": "cached", "python",
    "seconds"}``. Missing, with nothing on stdin: ``{"env": "missing", "uv", "system",
    "machine"}`` (the uv found here, "" for none; what the kernel's uv must run on). Missing,
    with a tar on stdin (``requirements.txt``: the lock, local wheels written under
    ``${ROOT}/wheels``; ``wheels/``; ``uv`` when this host has none): build it with ``uv
    venv --relocatable`` (Python MINOR: a managed one unless PREFERENCE or the host's
    UV_PYTHON_PREFERENCE says otherwise) and ``uv pip sync`` into a folder of its own, then
    rename that to ENVS/HASH: ``{"env": "built", "python", "seconds"}``. One build per hash
    at a time (a lock file); a kernel that waited for another's build answers cached.
``start ROOT NAME ROLE TIMEOUT PYTHON [DASK_BURST__X=VALUE ...] -- NODE-ARGS``
    unpack the bundle into ROOT/tls (0700), start ``PYTHON -m jupyter_burst.node`` (PYTHON:
    the environment's) in a session of its own (so it outlives the ssh connection), with the
    settings given (``burst.*`` only: the machine's own, such as its metadata service), and
    for the head wait until its scheduler has written its record: ``{"pid", "gpus", "root",
    "scheduler"?}``.
``order ROOT PYTHON AFTER``
    a Lambda head's terminate order (clusters/lambda_cloud/node_key.py) from stdin into
    ROOT/terminate.json (0600), and ``PYTHON -m jupyter_burst.node.lambda_terminate`` started
    on it in a session of its own with ``--after AFTER`` seconds (the cluster's lifetime,
    whatever its watchdog does): ``{"order": path, "pid"}``.
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

import contextlib
import fcntl
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

_MARK = "JUPYTER_BURST_NODE"
# What the notebook's lock writes where this host keeps the wheels built in the kernel.
_ROOT = "${ROOT}"
# Where uv's installer puts it: a non-interactive ssh login's PATH often lacks these.
_UV_PLACES = ("~/.local/bin/uv", "~/.cargo/bin/uv")
# What would make the node's processes import something other than their environment's.
_FOREIGN = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "CONDA_PREFIX")


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


# the environment ---------------------------------------------------------------------


def _find_uv(envs):
    """A uv this host can run: on PATH, where its installer puts it, or one a kernel sent."""
    places = [shutil.which("uv"), *(os.path.expanduser(p) for p in _UV_PLACES)]
    places.append(str(envs / "bin" / "uv"))
    for place in places:
        if place and os.path.isfile(place) and os.access(place, os.X_OK):
            return place
    return ""


def _complete(target):
    """Whether the environment is there: only a finished build is ever renamed to its hash."""
    return (target / ".burst-hash").is_file()


def _cached(target, seconds=0.0):
    _answer({"env": "cached", "python": str(target / "bin" / "python"), "seconds": seconds})


def _replace_file(data_from, dest, mode=0o644):
    """``dest`` with the contents of ``data_from``, whole or not at all: another kernel may
    write the same file (the same contents: it is keyed by them) at the same time."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(data_from, "rb") as source:
            shutil.copyfileobj(source, out)
        os.chmod(partial, mode)
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _unpack(payload, into):
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for member in tar.getmembers():
            name = pathlib.PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                _fail(f"the environment's archive holds {member.name!r}, which is not ours")
        # Every member is checked above; Pythons that have it filter them again.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, **safe)


def _uv_environment(envs, preference, environ):
    """uv's settings for a build here: its Python kept beside the environments (a managed
    one must outlive the build: the environment's python links to it), its cache there
    unless the host has one, and which Python it may use."""
    env = {k: v for k, v in environ.items() if k not in _FOREIGN and k != "VIRTUAL_ENV"}
    env["UV_PYTHON_INSTALL_DIR"] = str(envs / "python")
    env.setdefault("UV_CACHE_DIR", str(envs / "uv-cache"))
    # Ours (burst.ssh.uv-python-preference), else the host's own, else a managed Python:
    # nothing of the host's Python is relied on.
    env["UV_PYTHON_PREFERENCE"] = (
        preference or environ.get("UV_PYTHON_PREFERENCE") or ("only-managed")
    )
    return env


def _run_uv(command, env, what, fix):
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    except OSError as exc:
        _fail(f"could not run {command[0]} ({exc}); install uv on this host")
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        said = " | ".join(lines[-3:])[-600:] or f"exit {done.returncode}"
        _fail(f"uv could not {what} ({said}); {fix}")


def environment(envs, env_hash, minor, preference, index_args):
    began = time.monotonic()
    os.umask(0o077)  # the environment: this user's, as the nodes that run it
    envs = pathlib.Path(envs).expanduser()
    envs.mkdir(parents=True, exist_ok=True)
    envs = envs.resolve()
    target = envs / env_hash
    if _complete(target):
        _cached(target)
    payload = sys.stdin.buffer.read()
    if not payload:
        uname = os.uname()
        _answer(
            {"env": "missing", "uv": _find_uv(envs), "system": uname.sysname,
             "machine": uname.machine}
        )  # fmt: skip
    # One build of a hash at a time on this host: another kernel's waits here, then finds it.
    with open(envs / f".{env_hash}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target):
            _cached(target, round(time.monotonic() - began, 1))
        work = pathlib.Path(tempfile.mkdtemp(prefix=f".build-{env_hash[:12]}-", dir=envs))
        try:
            _build(envs, work, target, payload, minor, preference, index_args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - began, 1)
    _answer({"env": "built", "python": str(target / "bin" / "python"), "seconds": seconds})


def _build(envs, work, target, payload, minor, preference, index_args):
    incoming = work / "incoming"
    _unpack(payload, incoming)
    if (incoming / "uv").is_file():
        _replace_file(incoming / "uv", envs / "bin" / "uv", 0o755)
    uv = _find_uv(envs)
    if not uv:
        _fail("no uv here to build the notebook's environment with; install uv on this host")
    for wheel in sorted((incoming / "wheels").rglob("*.whl")):
        kept = envs / "wheels" / wheel.relative_to(incoming / "wheels")
        if not kept.exists():
            _replace_file(wheel, kept)
    requirements = work / "requirements.txt"
    lock_text = (incoming / "requirements.txt").read_text()
    requirements.write_text(lock_text.replace(_ROOT, str(envs)))
    env = _uv_environment(envs, preference, dict(os.environ))
    venv = work / "env"
    _run_uv(
        [uv, "venv", "--quiet", "--relocatable", "--python", minor, str(venv)],
        env,
        f"make a Python {minor} environment",
        f"let uv download one (UV_PYTHON_PREFERENCE=only-managed, the default), or install "
        f"Python {minor} here and set burst.ssh.uv-python-preference: only-system",
    )
    _run_uv(
        [uv, "pip", "sync", "--quiet", "--python", str(venv / "bin" / "python"), *index_args,
         str(requirements)],
        env,
        "install the notebook's packages",
        "this host must reach the package index (burst.env.index-url, burst.env.find-links)",
    )  # fmt: skip
    (venv / ".burst-hash").write_text(target.name + "\n")
    (venv / ".burst-built").write_text(json.dumps({"built": time.time(), "uv": uv}) + "\n")
    try:
        os.rename(venv, target)  # whole or not at all: a node never sees half of it
    except OSError as exc:
        if not _complete(target):  # not another build's win (one without the lock): a failure
            _fail(f"could not keep the environment at {target}: {exc}")


# a node ------------------------------------------------------------------------------


def _node_environ(root, python):
    """The node's environment variables: its own Python's packages and nothing else (no
    PYTHONPATH, no user site-packages), that Python's bin first on PATH for a cell's ``!``."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    bin_dir = os.path.dirname(python)
    env["PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("PATH", "")]))
    env["VIRTUAL_ENV"] = os.path.dirname(bin_dir)
    env["PYTHONNOUSERSITE"] = "1"
    env[_MARK] = str(root)
    return env


def start(root, name, role, timeout, python, node_args, settings=()):
    os.umask(0o077)  # the key, the logs and the node's state: this user's only
    root = pathlib.Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    env = _node_environ(root, python)
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key.startswith("DASK_BURST__") or not key.replace("_", "").isalnum():
            _fail(f"not a burst setting: {setting!r}")
        env[key] = value
    bundle = sys.stdin.buffer.read()
    try:
        unpack = subprocess.run(
            [python, "-m", "jupyter_burst.clusters.tls", "unpack", "/dev/stdin", str(root / "tls")],
            input=bundle,
            capture_output=True,
            env=env,
        )
    except OSError as exc:
        _fail(f"could not run the environment's {python}: {exc}")
    if unpack.returncode != 0:
        last = (unpack.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        _fail(f"could not unpack the node's keys with {python}: {last}")
    state = root / "state"
    state.mkdir(exist_ok=True)
    log_path = root / "node.log"
    command = [
        python, "-m", "jupyter_burst.node", *node_args,
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
            env=env,
        )
    (root / "node.pid").write_text(str(node.pid))
    answer = {"pid": node.pid, "gpus": _gpus(), "root": str(root)}
    if role != "head":
        _answer(answer)
    # The head's record, keyed by provider and name (clusters/records.py); NAME.json before.
    provider = node_args[node_args.index("--provider") + 1] if "--provider" in node_args else "ssh"
    records = [state / "clusters" / f"{name}@{provider}.json", state / "clusters" / f"{name}.json"]
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


def order(root, python, after):
    os.umask(0o077)  # it holds an API key: this user's only
    root = pathlib.Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    path = root / "terminate.json"
    temporary = root / "terminate.json.new"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(sys.stdin.buffer.read())
    os.replace(temporary, path)
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env["PYTHONNOUSERSITE"] = "1"
    with open(root / "terminate.log", "ab") as log:
        backstop = subprocess.Popen(
            [python, "-m", "jupyter_burst.node.lambda_terminate", str(path), "--after", after],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # it outlives this connection, and the node
            cwd=root,
            env=env,
        )
    _answer({"order": str(path), "pid": backstop.pid})


def main(argv):
    command, args = argv[0], argv[1:]
    if command == "env":
        split = args.index("--")
        envs, env_hash, minor, preference = args[:split]
        environment(envs, env_hash, minor, preference, args[split + 1 :])
    elif command == "start":
        split = args.index("--")
        root, name, role, timeout, python, *settings = args[:split]
        start(root, name, role, float(timeout), python, args[split + 1 :], settings)
    elif command == "order":
        order(args[0], args[1], args[2])
    elif command == "alive":
        _answer({"alive": bool(_members(args[0], int(args[1])))})
    elif command == "stop":
        stop(args[0], int(args[1]), float(args[2]))
    else:
        _fail(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
