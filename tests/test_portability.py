"""The kernel side, the server extension and the local provider need no fcntl and no /proc.

Windows has neither, macOS no /proc: a kernel here is made to look like that (see
``_RESTRICT`` below), and then loads the extension, imports the server extension, runs a
``%%burst`` cell on the local provider and reads the clusters the sidebar would show.
GPU discovery (NVML, :mod:`jupyter_burst.gpus`) is checked on its own at the end.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import types

import pytest

from tests.fake_nvml import fake_nvml
from tests.harness import REPO, burst_kernel

# The kernel's sitecustomize.py (its folder goes first on PYTHONPATH, for this kernel).
#
# What is refused is what jupyter_burst's own code asks for, directly or through the
# standard library: the nearest caller outside the standard library decides. Third-party
# libraries keep their own platform branches (distributed's locket and filelock use fcntl
# on Linux and the Windows API on Windows; psutil reads /proc on Linux and other APIs
# elsewhere), so refusing fcntl or /proc to them here would test Linux without fcntl, a
# platform nobody runs, instead of our code.
#
# fcntl: ``import fcntl`` (or importlib.import_module) by jupyter_burst raises
#   ModuleNotFoundError, whether or not a library imported it already.
# /proc: open, os.open, listdir, scandir, stat, lstat, readlink and access (and so pathlib,
#   os.path and shutil) raise PermissionError for any path under /proc.
# Every refusal is logged, so that our code is caught even where it would have caught the
# error (as the old GPU count did, which read /proc/driver/nvidia and took an error for 0).
#
# The local cluster's node and worker processes inherit PYTHONPATH, so they run under the
# same restriction: on Windows the local provider runs them on the user's machine too.
_RESTRICT = r"""
import builtins, importlib, io, json, os, sys, sysconfig

_LOG = os.environ["BURST_TEST_REFUSALS"]
_STDLIB = tuple({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]})
_original = {}


def _stdlib(filename):
    if filename.startswith("<frozen") or filename == __file__:
        return True
    return filename.startswith(_STDLIB) and "-packages" not in filename


def _caller(frame):
    while frame is not None and _stdlib(frame.f_code.co_filename):
        frame = frame.f_back
    return "" if frame is None else frame.f_globals.get("__name__") or ""


def _ours(module):
    return module.split(".")[0] == "jupyter_burst"


def _refuse(what, detail, caller):
    line = json.dumps({"pid": os.getpid(), "what": what, "detail": detail, "caller": caller})
    fd = _original["os.open"](_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _under_proc(path):
    if isinstance(path, int):
        return False
    try:
        path = os.path.abspath(os.fsdecode(os.fspath(path)))
    except TypeError:
        return False
    return path == "/proc" or path.startswith("/proc/")


def _guard(name, function):
    def guarded(path=".", *args, **kwargs):
        if _under_proc(path):
            caller = _caller(sys._getframe().f_back)
            if _ours(caller):
                _refuse("/proc", f"{name}({os.fsdecode(os.fspath(path))!r})", caller)
                raise PermissionError(13, "Permission denied (made unreadable by a test)", path)
        return function(path, *args, **kwargs)

    _original[name] = function
    return guarded


def _no_fcntl(name, caller):
    if _ours(caller):
        _refuse("fcntl", f"import {name}", caller)
        raise ModuleNotFoundError("No module named 'fcntl' (made unimportable by a test)", name=name)


_import = builtins.__import__
_import_module = importlib.import_module


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] == "fcntl":
        _no_fcntl(name, (globals or {}).get("__name__") or _caller(sys._getframe().f_back))
    return _import(name, globals, locals, fromlist, level)


def _guarded_import_module(name, package=None):
    if name.split(".")[0] == "fcntl":
        _no_fcntl(name, _caller(sys._getframe().f_back))
    return _import_module(name, package)


builtins.__import__ = _guarded_import
importlib.import_module = _guarded_import_module
builtins.open = _guard("open", builtins.open)
io.open = builtins.open
for _name in ("open", "listdir", "scandir", "stat", "lstat", "readlink", "access"):
    setattr(os, _name, _guard("os." + _name, getattr(os, _name)))
"""

# What jupyter_burst would do: run where our code's refusals are told apart from others'.
_PROBE = """\
import psutil
probe = {"__name__": "jupyter_burst._portability_probe"}
try:
    exec("import fcntl", probe)
except ImportError:
    print("no fcntl")
try:
    exec("open('/proc/self/stat')", probe)
except PermissionError:
    print("no /proc")
print("psutil", psutil.Process().create_time() > 0)
"""

_CELL = """\
%%burst
import os, psutil
found = {"pid": os.getpid(), "started": psutil.Process().create_time() > 0, "sum": sum(range(10))}
"""


def _refusals(log: pathlib.Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_kernel_without_fcntl_and_proc_runs_a_cell_on_the_local_provider(
    tmp_path, state_dir, workdir, no_leaks
):
    restrict = tmp_path / "restrict"
    restrict.mkdir()
    (restrict / "sitecustomize.py").write_text(_RESTRICT)
    log = tmp_path / "refusals.jsonl"
    env = {
        "PYTHONPATH": os.pathsep.join([str(restrict), str(REPO)]),
        "BURST_TEST_REFUSALS": str(log),
    }
    with burst_kernel(state_dir, workdir, env) as kernel:
        # The restriction holds in this kernel, and psutil still reads processes.
        probe = kernel.ok(_PROBE)
        assert probe.stdout.splitlines() == ["no fcntl", "no /proc", "psutil True"], probe
        kernel_pid = int(kernel.ok("import os\nprint(os.getpid())").stdout)
        kernel.ok("import jupyter_burst.server.handlers, jupyter_burst.server.api")

        run = kernel.ok(_CELL, timeout=180)
        found = json.loads(kernel.ok("import json\nprint(json.dumps(found))").stdout)
        assert found["sum"] == 45 and found["started"], (found, run.stderr)
        assert found["pid"] != kernel_pid, "the cell ran in the kernel, not on the cluster"

        # What the sidebar shows: the running local cluster, by the server extension's view.
        view = kernel.ok(
            "import pathlib\n"
            "from jupyter_burst.driver import cluster\n"
            "from jupyter_burst.server import api\n"
            f"rows = api.clusters_view(pathlib.Path({str(state_dir)!r}), live=cluster.status())\n"
            "print(json.dumps([(r['provider'], r['state']) for r in rows]))\n"
        )
        assert json.loads(view.stdout) == [["local", "running"]], view

    # Only the probe was refused: no module of ours asked for fcntl or /proc, in the kernel
    # or in the cluster's processes.
    refusals = _refusals(log)
    assert [(r["what"], r["caller"]) for r in refusals] == [
        ("fcntl", "jupyter_burst._portability_probe"),
        ("/proc", "jupyter_burst._portability_probe"),
    ], refusals


# GPU discovery ----------------------------------------------------------------------------


@pytest.fixture
def gpus(monkeypatch):
    from jupyter_burst import gpus

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return gpus


def test_no_nvml_bindings_or_library_means_no_gpus_quietly(gpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert (gpus.cuda_device_count(), gpus.devices(), gpus.model()) == (0, [], ("CUDA GPU", 0.0))

    missing = types.ModuleType("pynvml")
    missing.NVMLError = type("NVMLError", (Exception,), {})

    def no_library() -> None:
        raise missing.NVMLError("NVML Shared Library Not Found")

    missing.nvmlInit = no_library
    monkeypatch.setitem(sys.modules, "pynvml", missing)  # installed, but no driver
    assert (gpus.cuda_device_count(), gpus.devices()) == (0, [])


def test_gpus_are_listed_by_nvml_as_cuda_visible_devices_shows_them(gpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(["H100", "H100", "H100"], 80))
    assert gpus.cuda_device_count() == 3 and gpus.model() == ("H100", 80.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2,0")
    assert gpus.cuda_device_count() == 2 and len(gpus.devices()) == 2
    # Taken at its word even where the driver says otherwise (a slot sees its one GPU).
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert gpus.cuda_device_count() == 1 and gpus.devices() == []
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert gpus.cuda_device_count() == 0 and gpus.devices() == []
    assert gpus.slot_devices(3, 2) == ["cuda:0", "cuda:1", "cpu"]
