"""Binder's files (binder/) hold together, checked with the real tools rather than read.

- What postBuild pip-installs resolves, from nothing, with the pins of constraints.txt:
  torch is the pinned version's CPU build, JupyterLab is 4.x, no CUDA package comes along.
- postBuild runs, every line of it, in an environment like the one Binder gives it, and
  leaves JupyterLab with both halves of the extension enabled.
- binder/start sets the notional price and the state folder, then becomes its command.
- The quickstart notebook that the Binder link opens runs in that configuration, its cost
  meter moves, and nothing of it is left running.

No network to PyTorch's CPU index here: TORCH_INDEX, postBuild's one setting, points at an
empty local index, and torch comes from this machine's pip configuration, as for `make`.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal

import psutil
import yaml

from tests.harness import strip_ansi

REPO = pathlib.Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"
# What binder/start sets, and what the cost meter therefore counts.
BINDER_PRICE = Decimal("2.50")

DEV_PREFIX = pathlib.Path(sys.prefix)
DEV_PYTHON = DEV_PREFIX / "bin" / "python"
SITE = pathlib.Path("lib") / f"python{sys.version_info.major}.{sys.version_info.minor}"
# The development venv's own jupyter-burst (editable, and its shared data): what postBuild
# has to install, so a clone of the venv leaves them out.
OWN_FILES = re.compile(r"^(__editable__\.|_editable_impl_)?jupyter[_-]burst([-_.].*)?$")
OWN_PATHS = {
    pathlib.Path("share/jupyter/labextensions/jupyter-burst"),
    pathlib.Path("etc/jupyter/jupyter_server_config.d/jupyter_burst.json"),
    pathlib.Path("bin/jupyter-burst"),
}


def _torch_pin() -> str:
    found = re.search(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.M)
    assert found, "constraints.txt pins no torch==VERSION"
    return found.group(1)


def _run(
    cmd: list[str],
    env: dict[str, str],
    cwd: pathlib.Path,
    timeout: float,
    expect: int | None = 0,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to the end (killed at ``timeout``); its exit status must be ``expect``."""
    done = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if expect is not None and done.returncode != expect:
        raise AssertionError(
            f"{' '.join(cmd)} exited {done.returncode}, not {expect}\n"
            f"--- stdout (end)\n{done.stdout[-6000:]}\n--- stderr (end)\n{done.stderr[-6000:]}"
        )
    return done


def _base_env(tmp: pathlib.Path, path: list[pathlib.Path]) -> dict[str, str]:
    """This process's environment without its venv, its jupyter-burst settings and its user
    Jupyter folders; ``path`` first on PATH, then the system's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
        and not k.startswith(("DASK_BURST__", "JUPYTER_"))
    }
    env["PATH"] = os.pathsep.join([*map(str, path), "/usr/bin", "/bin"])
    for kind in ("CONFIG", "DATA", "RUNTIME"):
        env[f"JUPYTER_{kind}_DIR"] = str(tmp / f"jupyter-{kind.lower()}")
    return env


def _repo_copy(dest: pathlib.Path) -> pathlib.Path:
    """What Binder clones (the files git tracks, and the new ones it would), plus this
    checkout's built labextension/: the build hook then skips the npm build (which `make`
    runs and tests elsewhere) as its `skip-if-exists` says."""
    built = REPO / "labextension" / "static" / "style.js"
    assert built.is_file(), "no labextension build in this checkout: run `make labextension`"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file another change deleted is not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    shutil.copytree(REPO / "labextension", dest / "labextension")
    return dest


def _empty_index(dest: pathlib.Path) -> str:
    """A package index with nothing in it, for TORCH_INDEX: no network, and no package."""
    dest.mkdir(parents=True)
    (dest / "index.html").write_text("<!DOCTYPE html><html><body></body></html>\n")
    return dest.as_uri()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _clone_dev_venv(dest: pathlib.Path) -> pathlib.Path:
    """A new venv holding this venv's packages, less jupyter-burst: an environment where
    postBuild's pip finds the dependencies installed (as a resolution from nothing would
    install them, which the resolution test checks) and installs jupyter-burst itself.

    Files are hard links, which nothing here writes through: pip unlinks a file before
    writing it and moves an uninstalled one away, Python writes bytecode by renaming, and
    postBuild renames its one file into place. The scripts in bin/ are rewritten copies
    naming the clone's python.
    """
    assert sys.prefix != sys.base_prefix, "tests/test_binder.py runs in the project's venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)

    def skip(folder: str, names: list[str]) -> set[str]:
        here = pathlib.Path(folder).relative_to(DEV_PREFIX)
        return {
            n
            for n in names
            if here / n in OWN_PATHS or (here == SITE / "site-packages" and OWN_FILES.match(n))
        }

    for top in ("lib", "share", "etc"):
        if (DEV_PREFIX / top).is_dir():
            shutil.copytree(
                DEV_PREFIX / top,
                dest / top,
                symlinks=True,
                ignore=skip,
                copy_function=_link_or_copy,
                dirs_exist_ok=True,
            )
    old, new = str(DEV_PREFIX / "bin" / "python").encode(), str(dest / "bin" / "python").encode()
    for script in (DEV_PREFIX / "bin").iterdir():
        target = dest / "bin" / script.name
        if target.exists() or target.is_symlink() or pathlib.Path("bin", script.name) in OWN_PATHS:
            continue  # the clone's own python and activate scripts; jupyter-burst's script
        if script.is_file():
            content = script.read_bytes()
            if content.startswith(b"#!"):
                target.write_bytes(content.replace(old, new))
                target.chmod(0o755)
            else:
                _link_or_copy(str(script), str(target))
    return dest


def _own_dev_files() -> set[pathlib.Path]:
    """This venv's jupyter-burst entries (to check that a test left them as they were)."""
    site = DEV_PREFIX / SITE / "site-packages"
    found = {p for p in site.iterdir() if OWN_FILES.match(p.name)}
    return found | {DEV_PREFIX / p for p in OWN_PATHS if (DEV_PREFIX / p).exists()}


def _still_running(pid: int | None, stopped: float) -> bool:
    """Whether process ``pid``, recorded as stopped at ``stopped``, still runs (a process
    that has its number now but began after that is another one)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() < stopped
    except psutil.NoSuchProcess:
        return False


def _lines_under(listing: str, header: str) -> list[str]:
    """The entries of a `jupyter ... list` table under its line ``header``: up to the next
    folder it lists (a path, or `Config dir: <path>`), stripped."""
    lines = strip_ansi(listing).splitlines()
    assert header in lines, f"no {header!r} in:\n{listing}"
    under = []
    for line in lines[lines.index(header) + 1 :]:
        if line.startswith(("/", "Config dir:", "Other labextensions")):
            break
        if line.startswith((" ", "\t")) and line.strip():
            under.append(line.strip())
    return under


def test_environment_yml_is_python_node_and_pip_only() -> None:
    env = yaml.safe_load((BINDER / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps  # pyproject's requires-python and classifiers, the Makefile's
    assert "nodejs=24" in deps  # the labextension build, on a maintained Node LTS
    assert "pip" in deps
    # Every Python package comes from postBuild's pip, where constraints.txt applies: a pip
    # section here would be installed before it, unconstrained.
    assert not [d for d in deps if isinstance(d, dict)], "a pip section in environment.yml"


def test_binder_link_opens_the_quickstart() -> None:
    text = (BINDER / "README.md").read_text()
    links = re.findall(r"https://mybinder\.org/v2/gh/[^)\s]+", text)
    assert links, "binder/README.md has no mybinder.org link"
    for link in links:
        found = re.search(r"[?&]urlpath=lab/tree/([^&#]+)", link)
        assert found, f"{link} opens no file in JupyterLab"
        assert (REPO / found.group(1)).is_file(), f"{link} opens {found.group(1)}: not here"
        assert found.group(1) == "notebooks/quickstart.ipynb"


def test_postbuild_requirements_resolve_with_the_pins(tmp_path: pathlib.Path) -> None:
    """postBuild's own pip lines, resolution only, in a fresh venv with nothing installed.

    From nothing means every package's index pages and metadata: most of this test's time
    (about 40 s here) is pip reading them."""
    deps = yaml.safe_load((BINDER / "environment.yml").read_text())["dependencies"]
    here = f"python={sys.version_info.major}.{sys.version_info.minor}"
    assert here in deps, f"this venv is {here}: the resolution would not be Binder's"
    repo = _repo_copy(tmp_path / "repo")
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    reports = tmp_path / "reports"
    reports.mkdir()
    # Stands for the Binder environment's python: its `-m pip install` runs become pip
    # resolutions for the fresh venv (--python), reported and not installed; anything else
    # runs on the fresh venv's python.
    shim = tmp_path / "shim"
    shim.mkdir()
    fresh_python = shlex.quote(str(fresh / "bin" / "python"))
    report = shlex.quote(str(reports)) + '/pip-install-"$$".json'
    (shim / "python").write_text(
        "#!/usr/bin/env bash\n"
        "set -euo pipefail\n"
        'if [[ $# -ge 3 && "$1 $2 $3" == "-m pip install" ]]; then\n'
        "    shift 3\n"
        f"    exec {shlex.quote(str(DEV_PYTHON))} -m pip --python {fresh_python} install \\\n"
        f'        --dry-run --ignore-installed --report {report} "$@"\n'
        "fi\n"
        f'exec {fresh_python} "$@"\n'
    )
    (shim / "python").chmod(0o755)
    env = _base_env(tmp_path, [shim, fresh / "bin"])
    env["TORCH_INDEX"] = _empty_index(tmp_path / "cpu-index")

    done = _run([str(repo / "binder" / "postBuild")], env, tmp_path, timeout=400, expect=None)
    # Every pip line went through; then the check after them failed, as it must where
    # nothing was installed: the build would stop there.
    assert done.returncode == 1, done.stderr[-6000:]
    assert "postBuild: the jupyter-burst labextension is not installed and enabled" in done.stderr
    assert not (tmp_path / "venv" / SITE / "site-packages" / "torch").exists()

    resolved: dict[str, dict] = {}
    requested: set[str] = set()
    found = sorted(reports.glob("pip-install-*.json"))
    assert found, "postBuild ran no pip install"
    for report in found:
        for item in json.loads(report.read_text())["install"]:
            name = item["metadata"]["name"].lower().replace("_", "-")
            resolved[name] = item
            if item.get("requested"):
                requested.add(name)
    versions = {name: item["metadata"]["version"] for name, item in resolved.items()}

    pin = _torch_pin()
    assert versions["torch"] == f"{pin}+cpu", "torch: not the pinned version's CPU build"
    # nvidia-ml-py is the driver's management library's bindings (GPU discovery): no CUDA.
    cuda = [n for n in versions if n.startswith(("nvidia-", "triton")) and n != "nvidia-ml-py"]
    assert not cuda, "CUDA packages"
    assert versions["jupyterlab"].split(".")[0] == "4"
    assert sorted(resolved["jupyter-burst"]["requested_extras"]) == ["lab", "torch"]
    assert resolved["jupyter-burst"]["download_info"]["url"] == repo.as_uri()
    assert {"torch", "jupyter-burst", "numpy", "pandas", "matplotlib", "tqdm"} <= requested
    # Whatever else constraints.txt pins and the resolution holds: the pinned version.
    for line in (REPO / "constraints.txt").read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if pinned and pinned.group(1).lower() in versions:
            got = versions[pinned.group(1).lower()]
            assert got.split("+")[0] == pinned.group(2), f"{pinned.group(1)} {got}"


def test_postbuild_installs_and_enables_the_extension(tmp_path: pathlib.Path) -> None:
    """Every line of postBuild, for real, in a clone of this venv without jupyter-burst."""
    own_before = _own_dev_files()
    repo = _repo_copy(tmp_path / "repo")
    clone = _clone_dev_venv(tmp_path / "venv")
    env = _base_env(tmp_path, [clone / "bin"])
    env["TORCH_INDEX"] = _empty_index(tmp_path / "cpu-index")
    where = [
        str(clone / "bin" / "python"),
        "-c",
        "import jupyter_burst; print(jupyter_burst.__file__)",
    ]
    _run(where, env, tmp_path, timeout=60, expect=1)  # not installed there yet

    built = _run([str(repo / "binder" / "postBuild")], env, tmp_path, timeout=300).stdout

    # Installed from the tree as a wheel (not the checkout's editable install)...
    installed = _run(where, env, tmp_path, timeout=60).stdout.strip()
    assert pathlib.Path(installed).is_relative_to(clone / SITE / "site-packages"), installed
    # ...with its labextension in the environment's share/, enabled (the tables are
    # `jupyter labextension list` and `jupyter server extension list`, which postBuild
    # runs with the clone's jupyter and prints)...
    labextensions = _lines_under(built, str(clone / "share" / "jupyter" / "labextensions"))
    assert any(
        re.fullmatch(r"jupyter-burst v\S+ enabled OK \(python, jupyter-burst\)", line)
        for line in labextensions
    ), built
    assert (clone / "share/jupyter/labextensions/jupyter-burst/static/style.js").is_file()
    # ...and its server extension enabled in the environment's etc/jupyter, and valid.
    server = _lines_under(built, f"Config dir: {clone / 'etc' / 'jupyter'}")
    assert "jupyter_burst enabled" in server, built
    assert any(re.fullmatch(r"jupyter_burst \S+ OK", line) for line in server), built

    # The Jupyter config it writes: known settings of JupyterLab's own, valid values.
    overrides = json.loads((clone / "share/jupyter/lab/settings/overrides.json").read_text())
    schemas = clone / "share/jupyter/lab/schemas"
    for plugin, values in overrides.items():
        package, name = plugin.split(":")
        schema = json.loads((schemas / package / f"{name}.json").read_text())["properties"]
        for key, value in values.items():
            allowed = [c["const"] for c in schema[key].get("oneOf", [])] or None
            assert allowed is None or value in allowed, (plugin, key, value)
    assert _own_dev_files() == own_before, "the development venv's jupyter-burst changed"


def test_start_sets_the_notional_price_and_the_state_folder(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = _base_env(tmp_path, [DEV_PREFIX / "bin"])
    env["HOME"] = str(home)
    code = (
        "import json, os\n"
        "from jupyter_burst import config\n"
        "from jupyter_burst.clusters.launch_checks import local_price_per_hour\n"
        "from jupyter_burst.store.cost import Spend\n"
        "price = local_price_per_hour()\n"
        "print(json.dumps({'pid': os.getpid(), 'price': str(price),\n"
        "    'setting': config.get('local.price-per-hour'), 'state': str(config.state_dir()),\n"
        "    'shown': Spend.of({'provider': 'local'}, price).show('/h')}))\n"
    )
    with subprocess.Popen(
        [str(BINDER / "start"), sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    said = json.loads(out)
    assert said["pid"] == proc.pid  # start became python (exec), no shell left above it
    assert Decimal(said["price"]) == BINDER_PRICE
    assert said["setting"] == float(BINDER_PRICE)
    assert said["shown"] == "$2.50/h notional"
    assert said["state"] == str(home / ".burst")
    assert (home / ".burst").is_dir()


def test_quickstart_runs_in_the_binder_configuration(
    tmp_path: pathlib.Path, state_dir: pathlib.Path, no_leaks: None
) -> None:
    env = _base_env(tmp_path, [DEV_PREFIX / "bin"])
    env["DASK_BURST__STATE_DIR"] = str(state_dir)  # kept by start; --state-dir says the same
    started = time.time()
    done = _run(
        [
            str(BINDER / "start"),
            sys.executable,
            "-m",
            "jupyter_burst.tools.demo",
            str(QUICKSTART),
            "--state-dir",
            str(state_dir),
        ],
        env,
        REPO,
        timeout=400,
    )
    out = strip_ansi(done.stdout)
    cost = re.search(r"^cost: \$([0-9,]+\.[0-9]{2}) notional\b", out, re.M)
    assert cost, out[-4000:]
    assert Decimal(cost.group(1).replace(",", "")) > 0, "the cost meter did not move"
    # The notebook stopped its own cluster (%burst down): the demo's safety net had nothing to do.
    assert "stopped the clusters a notebook left running" not in out

    ledger = sqlite3.connect(state_dir / "ledger.sqlite")
    try:
        ledger.row_factory = sqlite3.Row
        query = "SELECT * FROM {} WHERE started >= ?"
        clusters = ledger.execute(query.format("clusters"), (started,)).fetchall()
        nodes = ledger.execute(query.format("nodes"), (started,)).fetchall()
    finally:
        ledger.close()
    assert clusters and nodes, "the quickstart started no cluster"
    assert [c["name"] for c in clusters if c["stopped"] is None] == [], "a cluster not stopped"
    for node in nodes:
        assert node["provider"] == "local"
        assert Decimal(repr(node["price_per_hour"])) == BINDER_PRICE
        assert node["stopped"] is not None, f"node {node['id']} not stopped"
        assert not _still_running(node["pid"], node["stopped"]), f"node {node['id']} runs"
