"""``python -m bench.node_install_count [--before REV]``: how many distributions a cluster node
installs, with the package as it was at REV (default ``2b6dbac``, before the install split of
issue #16) and as it is in this working tree; prints both counts and the two lists' difference.

What is counted is the install of the package itself (without extras) beside the packages
pickles need at the same versions on both sides, at this environment's versions
(``jupyter-burst==V dask==V distributed==V cloudpickle==V``, the pins the AWS boot of issue
#16 installed; since issue #17 a node installs the notebook's whole spec, which ``%burst env``
lists, and this count is its floor: a notebook environment with nothing else). Two things
differ from a node, the same for both trees:

- ``jupyter-burst==V`` is not on an index: each tree's wheel stands in for it, built with
  ``pip wheel --no-deps`` (with build isolation, so the build backend comes from the index and
  is not counted). The labextension build hook is skipped: this checkout's built
  ``labextension/`` is copied into each tree first (hatch-jupyter-builder's
  ``skip-if-exists``); it holds no Python dependency.
- torch is left out: a node installs the same pinned torch (and its dependencies) either way,
  several GB of them on PyPI's Linux build.

Each tree's install goes into a fresh venv made without pip (``python -m venv --without-pip``),
with this Python's pip (``pip --python VENV install``) and ``-c`` that tree's
``constraints.txt``, as the Makefile installs; the count is ``pip --python VENV list
--format=freeze``, in which the venv has nothing of its own (no pip, no setuptools). The
index is whatever this machine's pip uses (PyPI, or its configured mirrors). Not part of the
tests; under a minute on a 2-core machine with pip's cache warm.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
BEFORE = "2b6dbac"


def node_pip_args() -> list[str]:
    """The pins every node installs, whatever else the notebook has (this environment's versions)."""
    sys.path.insert(0, str(REPO))
    from jupyter_burst.clusters.node_versions import notebook_versions

    return [f"{name}=={version}" for name, version in sorted(notebook_versions().items())]


def tree_files(rev: str | None, dest: pathlib.Path) -> pathlib.Path:
    """REV's files (``git archive``, nothing checked out here), or this working tree's."""
    dest.mkdir(parents=True)
    if rev is not None:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        listed = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            check=True,
            capture_output=True,
        ).stdout
        for name in filter(None, listed.decode().split("\0")):
            source = REPO / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
    built = REPO / "labextension"
    if not (built / "static" / "style.js").is_file():
        raise SystemExit("build the labextension first (make labextension): the wheel needs it")
    shutil.copytree(built, dest / "labextension", symlinks=False, dirs_exist_ok=True)
    return dest


def node_install(tree: pathlib.Path, venv: pathlib.Path, args: list[str]) -> list[str]:
    """The node's pip line into a fresh venv, the tree's wheel for jupyter-burst; what is there."""
    wheels = venv.parent / f"{venv.name}-wheel"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(tree)], check=True
    )
    (wheel,) = wheels.glob("jupyter_burst-*.whl")
    wanted = []
    for arg in args:
        name = re.split(r"[=<>!~\[ ]", arg, maxsplit=1)[0].lower()
        if name == "torch":
            continue
        wanted.append(str(wheel) if name == "jupyter-burst" else arg)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    constraints = ["-c", str(tree / "constraints.txt")]
    subprocess.run([*pip, "--python", python, "install", *constraints, *wanted], check=True)
    listed = subprocess.run(
        [*pip, "--python", python, "list", "--format=freeze"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return sorted(line.strip() for line in listed.splitlines() if line.strip())


def name_of(line: str) -> str:
    return re.split(r"==| @ ", line, maxsplit=1)[0].lower().replace("_", "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.node_install_count")
    parser.add_argument("--before", default=BEFORE, help=f"the commit before (default {BEFORE})")
    parser.add_argument("--list", action="store_true", help="also print the after list in full")
    options = parser.parse_args(argv)
    args = node_pip_args()
    shown = [a for a in args if not a.lower().startswith("torch")]
    print(f"a node's pip line (torch left out): pip install {shlex.join(shown)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="node-install-count-") as tmp:
        root = pathlib.Path(tmp)
        os.environ.setdefault("PIP_NO_INPUT", "1")
        before = node_install(tree_files(options.before, root / "before"), root / "venv-b", args)
        after = node_install(tree_files(None, root / "after"), root / "venv-a", args)
    names_before = {name_of(line): line for line in before}
    names_after = {name_of(line): line for line in after}
    gone = sorted(set(names_before) - set(names_after))
    new = sorted(set(names_after) - set(names_before))
    print(f"before ({options.before}): {len(before)} distributions")
    print(f"after (working tree): {len(after)} distributions")
    print(f"no longer installed ({len(gone)}): {' '.join(gone)}")
    print(f"newly installed ({len(new)}): {' '.join(new) or '-'}")
    if options.list:
        print("after:", " ".join(after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
