"""The working folder travels: a remote cell runs in a copy of the notebook's folder on its
node, and what it writes there comes back into the notebook's folder.

The pure parts (the ignore rules, the folder walk and its limits, the conflict rule, the
node's copy) are tested without processes; the promise itself on an emulated EC2 node (the
VM emulator boots the real AWS boot script) and on two SSH "hosts", whose folders are not
the notebook's.
"""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from jupyter_burst import config
from jupyter_burst.driver import workdir_sync
from jupyter_burst.errors import BurstError
from jupyter_burst.kernel import workdir as kernel_side
from jupyter_burst.wire import folder_scan
from jupyter_burst.wire.contract import FilesBack, Workdir
from jupyter_burst.wire.ignore_rules import IgnoreRules, RuleFile
from jupyter_burst.worker import workdir as node_side
from tests import test_ssh_provider as ssh_tests
from tests.harness import burst_kernel


def _rules(*lines: str, base: str = "", prefix: str = "") -> IgnoreRules:
    return IgnoreRules([RuleFile(base, prefix, lines)])


# ---- the ignore rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "path", "is_dir", "ignored"),
    [
        (("*.csv",), "a.csv", False, True),
        (("*.csv",), "deep/er/b.csv", False, True),
        (("*.csv",), "a.csvx", False, False),
        (("/top.txt",), "top.txt", False, True),
        (("/top.txt",), "sub/top.txt", False, False),
        (("data/",), "data", True, True),
        (("data/",), "data", False, False),  # a file named data is not the folder data/
        (("data/",), "sub/data", True, True),
        (("*.csv", "!keep.csv"), "keep.csv", False, False),
        (("*.csv", "!keep.csv"), "drop.csv", False, True),
        (("!keep.csv", "*.csv"), "keep.csv", False, True),  # the later rule wins
        (("docs/**/*.md",), "docs/a/b/c.md", False, True),
        (("docs/**/*.md",), "docs/c.md", False, True),
        (("docs/**/*.md",), "other/docs/c.md", False, False),  # anchored: it has a slash
        (("**/logs",), "x/y/logs", True, True),
        (("out/**",), "out/a/b.bin", False, True),
        (("out/**",), "out", True, False),  # what is inside, not the folder itself
        (("model?.pt",), "model1.pt", False, True),
        (("model?.pt",), "model10.pt", False, False),
        (("run[0-9].log",), "run7.log", False, True),
        (("run[!0-9].log",), "runx.log", False, True),
        (("run[!0-9].log",), "run7.log", False, False),
        (("# a comment", ""), "# a comment", False, False),
        (("\\#hash",), "#hash", False, True),
        (("\\!bang",), "!bang", False, True),
        (("trailing   ",), "trailing", False, True),
        (("a/b",), "a/b", False, True),
        (("a/b",), "x/a/b", False, False),
    ],
)
def test_ignore_rules_read_as_git_reads_them(lines, path, is_dir, ignored):
    assert _rules(*lines).ignored(path, is_dir) is ignored


def test_a_rules_file_applies_below_its_own_folder_and_one_above_reads_through_its_prefix():
    below = _rules("*.tmp", "/only-here", base="sub/")
    assert below.ignored("sub/x.tmp", False) and not below.ignored("x.tmp", False)
    assert below.ignored("sub/only-here", False) and not below.ignored(
        "sub/deeper/only-here", False
    )
    above = _rules("/notebooks/big.bin", "*.pt", prefix="notebooks/")
    assert above.ignored("big.bin", False) and above.ignored("w/m.pt", False)
    assert not above.ignored("sub/big.bin", False)


def _tree(root: pathlib.Path, files: dict[str, bytes | str]) -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        target.write_bytes(content)


def test_the_walk_skips_what_git_and_burstignore_leave_out_and_environments_and_caches(tmp_path):
    repo = tmp_path / "repo"
    _tree(
        repo,
        {
            ".git/HEAD": "ref: refs/heads/main",
            ".gitignore": "*.pt\n/notebooks/secret.txt\n",
            "notebooks/.gitignore": "cache/\n",
            "notebooks/.burstignore": "raw/\n!raw-but-wanted.csv\n",
            "notebooks/data.csv": "a,b\n1,2\n",
            "notebooks/model.pt": "weights",
            "notebooks/secret.txt": "x",
            "notebooks/sub/secret.txt": "kept: the anchored rule names the top one",
            "notebooks/cache/blob": "x",
            "notebooks/raw/huge.bin": "x",
            "notebooks/raw-but-wanted.csv": "y",
            "notebooks/.ipynb_checkpoints/a-checkpoint.ipynb": "{}",
            "notebooks/__pycache__/m.cpython-311.pyc": "x",
            "notebooks/.venv/pyvenv.cfg": "home = /usr",
            "notebooks/.venv/lib/site.py": "x",
            "notebooks/env/conda-meta/history": "x",
            "notebooks/pkg/__init__.py": "",
        },
    )
    os.symlink(tmp_path, repo / "notebooks" / "loop")  # a folder link is not followed
    found = folder_scan.scan(str(repo / "notebooks"), read_rules=True)
    assert sorted(found.files) == [
        ".burstignore",
        ".gitignore",
        "data.csv",
        "pkg/__init__.py",
        "raw-but-wanted.csv",
        "sub/secret.txt",
    ]


def test_secret_shaped_files_stay_behind_unless_burstignore_sends_one_on_purpose(tmp_path):
    _tree(tmp_path, {".env": "TOKEN=x", "tls/server.pem": "x", ".ssh/id_ed25519": "x", "a.py": ""})
    assert list(folder_scan.scan(str(tmp_path), read_rules=True).files) == ["a.py"]
    (tmp_path / ".burstignore").write_text("!.env\n")
    assert sorted(folder_scan.scan(str(tmp_path), read_rules=True).files) == [
        ".burstignore",
        ".env",
        "a.py",
    ]


def test_a_gitignore_above_a_folder_outside_any_repository_is_not_read(tmp_path):
    _tree(tmp_path, {".gitignore": "*.csv\n", "nb/data.csv": "x"})
    assert list(folder_scan.scan(str(tmp_path / "nb"), read_rules=True).files) == ["data.csv"]


def test_past_the_limits_is_one_line_naming_the_biggest_files():
    sizes = {"big.bin": 300 << 20, "mid.bin": 20 << 20, "small.txt": 10, "tiny": 1}
    line = folder_scan.over_limits(sizes, 100 << 20, 1000)
    assert "\n" not in line
    assert "320.00 MiB" in line and "burst.workdir.max-bytes (100.00 MiB" in line
    assert "big.bin 300.00 MiB, mid.bin 20.00 MiB, small.txt 10 B" in line
    assert "tiny" not in line
    assert "max-files (2" in folder_scan.over_limits({"a": 1, "b": 1, "c": 1}, 1 << 20, 2)
    assert folder_scan.over_limits(sizes, 1 << 30, 1000) is None


@pytest.fixture
def settings(monkeypatch):
    """Set burst.* through DASK_BURST__ variables, as a user would; put back afterwards."""

    def set_(name: str, value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
        config.refresh()

    yield set_
    monkeypatch.undo()
    config.refresh()


def test_the_kernel_refuses_a_folder_past_the_cap_in_one_line(tmp_path, settings):
    _tree(tmp_path, {"big.bin": b"x" * 3000, "data.csv": "a\n1\n"})
    settings("DASK_BURST__WORKDIR__MAX_BYTES", "2 kB")
    with pytest.raises(BurstError) as refused:
        kernel_side.for_cell("aws", str(tmp_path))
    line = str(refused.value)
    assert "\n" not in line and "big.bin 2.93 kiB" in line
    assert ".burstignore" in line and "burst.workdir.max-bytes" in line
    assert "burst.workdir: false" in line

    (tmp_path / ".burstignore").write_text("big.bin\n")
    folder = kernel_side.for_cell("aws", str(tmp_path))
    assert sorted(folder.files) == [".burstignore", "data.csv"]
    assert folder.files["data.csv"].key == folder_scan.bytes_key(b"a\n1\n")
    assert kernel_side.for_cell("local", str(tmp_path)) is None  # it runs in this folder
    settings("DASK_BURST__WORKDIR", "false")
    assert kernel_side.for_cell("aws", str(tmp_path)) is None
    settings("DASK_BURST__WORKDIR", "[1, 2]")
    with pytest.raises(BurstError, match="set it to false"):
        kernel_side.for_cell("aws", str(tmp_path))


def test_an_unchanged_file_is_hashed_once_by_the_kernel(tmp_path, monkeypatch):
    _tree(tmp_path, {"data.csv": "a\n1\n"})
    old = 1_600_000_000_000_000_000  # long ago: a file this old is not written again this tick
    os.utime(tmp_path / "data.csv", ns=(old, old))
    cache = folder_scan.KeyCache()
    hashed = []
    real = folder_scan.content_key
    monkeypatch.setattr(folder_scan, "content_key", lambda p: hashed.append(p) or real(p))
    path, size = str(tmp_path / "data.csv"), 4
    assert cache.key(path, size, old) == cache.key(path, size, old)
    assert len(hashed) == 1
    fresh = folder_scan.KeyCache()  # a file written just now is hashed again next time
    now = time.time_ns()
    os.utime(tmp_path / "data.csv", ns=(now, now))
    fresh.key(path, size, now)
    assert len(fresh) == 0


# ---- the conflict rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "came", "now", "decision"),
    [
        ("A", "B", "A", "write"),  # the notebook's copy is as sent: the cell's change lands
        (None, "B", None, "write"),  # a new file, none in the notebook
        ("A", "B", "B", "same"),  # both made the same change
        ("A", "B", "C", "conflict"),  # both changed it: the notebook's copy is kept
        ("A", "B", None, "conflict"),  # the notebook deleted it meanwhile
        (None, "B", "C", "conflict"),  # the notebook made the same name meanwhile
    ],
)
def test_the_conflict_rule(sent, came, now, decision):
    assert kernel_side.verdict(sent, came, now) == decision


def test_bring_back_writes_new_and_changed_files_and_refuses_a_conflict_untouched(tmp_path):
    _tree(tmp_path, {"same.csv": "old", "both.csv": "mine now"})
    said: list[str] = []
    old_key = folder_scan.bytes_key(b"old")
    back = FilesBack(
        root=str(tmp_path),
        files={
            "out.csv": (None, b"new file", False),
            "same.csv": (old_key, b"changed by the cell", False),
            "both.csv": (old_key, b"changed by the cell", False),
            "run.sh": (None, b"#!/bin/sh\n", True),
            "../escape.txt": (None, b"x", False),
        },
    )
    written = kernel_side.bring_back(back, said.append)
    assert written == ["out.csv", "run.sh", "same.csv"]
    assert (tmp_path / "out.csv").read_bytes() == b"new file"
    assert (tmp_path / "same.csv").read_bytes() == b"changed by the cell"
    assert (tmp_path / "both.csv").read_bytes() == b"mine now"  # never overwritten
    assert (tmp_path / "run.sh").stat().st_mode & 0o100
    assert not (tmp_path.parent / "escape.txt").exists()
    conflict = [line for line in said if "both.csv" in line]
    assert len(conflict) == 1 and "the notebook's copy is kept" in conflict[0]
    assert any(line.startswith("burst: 3 files came back") for line in said), said
    assert all("\n" not in line for line in said)

    said.clear()
    refused = FilesBack(root=str(tmp_path), refused="the files the cell wrote come to 2 GiB")
    assert kernel_side.bring_back(refused, said.append) == []
    assert said == ["burst: the files the cell wrote come to 2 GiB"]


# ---- the node's copy ----------------------------------------------------------------------


def _send(notebook: pathlib.Path, state: pathlib.Path, monkeypatch) -> Workdir:
    """What the kernel would send, stored on a "node" whose state folder is ``state``."""
    monkeypatch.setenv("JUPYTER_BURST_STATE_DIR", str(state))
    monkeypatch.setenv("JUPYTER_BURST_CLUSTER", "c1")
    folder = kernel_side.for_cell("aws", str(notebook))
    _, missing = node_side.lacking(sorted({e.key for e in folder.files.values()}))
    source = kernel_side.NotebookFiles(folder)
    node_side.store({key: source.read(key) for key in missing})
    return folder


def test_the_node_lays_out_the_folder_once_per_job_and_reports_what_the_cell_wrote(
    tmp_path, monkeypatch
):
    notebook, state = tmp_path / "notebook", tmp_path / "node-state"
    _tree(
        notebook,
        {".gitignore": "scratch/\n", "data.csv": "a\n1\n", "sub/old.txt": "old", "x.sh": "#!"},
    )
    (notebook / "x.sh").chmod(0o755)
    folder = _send(notebook, state, monkeypatch)
    copy = node_side.prepare(folder, "job-1")
    assert copy == node_side.folder_of(folder) and copy.is_relative_to(state)
    assert (copy / "data.csv").read_text() == "a\n1\n" and (copy / "x.sh").stat().st_mode & 0o100
    assert (copy / "data.csv").stat().st_mtime_ns == (notebook / "data.csv").stat().st_mtime_ns
    assert node_side.lacking([e.key for e in folder.files.values()])[1] == []

    # the cell: writes a file, changes one, leaves scratch of its own
    (copy / "out.csv").write_text("b\n2\n")
    (copy / "sub" / "old.txt").write_text("new")
    _tree(copy, {"scratch/cache.bin": "kept on the node"})
    # another rank of the same job on this node does not lay it out again
    assert node_side.prepare(folder, "job-1") == copy and (copy / "out.csv").exists()
    back = node_side.collect(folder, copy)
    assert back.refused is None and back.root == str(notebook)
    assert sorted(back.files) == ["out.csv", "sub/old.txt"]
    assert back.files["out.csv"] == (None, b"b\n2\n", False)
    assert back.files["sub/old.txt"][0] == folder.files["sub/old.txt"].key
    # what came back is in the node's store: the next cell need not send it here
    assert node_side.lacking([folder_scan.bytes_key(b"b\n2\n")])[1] == []

    # the next job: the copy is the notebook's folder again; the node's scratch stays
    (notebook / "data.csv").write_text("a\n3\n")
    folder = _send(notebook, state, monkeypatch)
    node_side.prepare(folder, "job-2")
    assert not (copy / "out.csv").exists()  # it did not come back: it is not the notebook's
    assert (copy / "sub" / "old.txt").read_text() == "old"
    assert (copy / "data.csv").read_text() == "a\n3\n"
    assert (copy / "scratch" / "cache.bin").exists()
    assert node_side.collect(folder, copy).files == {}


def test_what_a_cell_writes_past_the_cap_stays_on_the_node_with_one_line(tmp_path, monkeypatch):
    notebook, state = tmp_path / "notebook", tmp_path / "node-state"
    _tree(notebook, {"data.csv": "a\n1\n"})
    folder = _send(notebook, state, monkeypatch)
    folder.max_bytes = 1000
    copy = node_side.prepare(folder, "job-1")
    _tree(copy, {"m.pt": b"w" * 5000, "small.txt": "s"})
    back = node_side.collect(folder, copy)
    assert back.files == {} and "\n" not in back.refused
    assert "m.pt 4.88 kiB" in back.refused and "they stay on the node" in back.refused


def test_a_node_lacking_a_file_says_so_in_one_line(tmp_path, monkeypatch):
    notebook, state = tmp_path / "notebook", tmp_path / "node-state"
    _tree(notebook, {"data.csv": "a\n1\n"})
    monkeypatch.setenv("JUPYTER_BURST_STATE_DIR", str(state))
    folder = kernel_side.for_cell("aws", str(notebook))
    with pytest.raises(BurstError, match="1 file.* did not reach node .*data.csv"):
        node_side.prepare(folder, "job-1")


def test_the_head_node_serves_a_new_node_from_its_own_store_or_says_why_not(tmp_path):
    root = node_side.node_root(tmp_path / "head-state", "c1")
    node_side.store({folder_scan.bytes_key(b"data"): b"data"}, root)
    head = workdir_sync.HeadStore(tmp_path / "head-state", "c1")
    assert head.read(folder_scan.bytes_key(b"data")) == b"data"
    with pytest.raises(BurstError, match="run the cell again from the notebook"):
        head.read(folder_scan.bytes_key(b"other"))
    with pytest.raises(BurstError, match="arrived damaged"):
        node_side.store({folder_scan.bytes_key(b"data"): b"not the data"}, root)


def test_files_travel_in_batches_of_bounded_size():
    sizes = {"a": 40 << 20, "b": 40 << 20, "c": 1, "d": 100 << 20}
    assert workdir_sync._batches(["a", "b", "c", "d"], sizes) == [["a"], ["b", "c"], ["d"]]
    assert workdir_sync._batches([], sizes) == []


# ---- the promise, on remote nodes ---------------------------------------------------------


def _instances(ec2) -> list[dict]:
    reply = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )
    return [i for r in reply["Reservations"] for i in r["Instances"]]


def test_a_cell_on_an_emulated_ec2_node_reads_and_writes_the_notebooks_folder(
    cloud, state_dir, workdir
):
    """The acceptance test: the node's folder is not the notebook's, yet ``open('data.csv')``
    reads the notebook's file and ``out.csv`` lands in the notebook's folder; unchanged files
    are not sent again; the ignore rules, the cap, a conflict and ``burst.workdir: false``."""
    env, vms, ec2 = cloud
    _tree(
        workdir,
        {
            "data.csv": "n\n1\n3\n",
            "lib/helpers.txt": "a file in a subfolder",
            ".gitignore": "secret/\n*.log\n",
            ".burstignore": "big.bin\n",
            "secret/token.txt": "never leaves the notebook's machine",
            ".env": "API_TOKEN=nor does this",
            "run.log": "ignored",
            "big.bin": b"\0" * 4096,
            ".ipynb_checkpoints/x-checkpoint.ipynb": "{}",
        },
    )
    cell = (
        "%%burst provider=aws\n"
        "import csv, os\n"
        "here = os.getcwd()\n"
        "seen = sorted(os.path.join(d, f)[2:] for d, _, fs in os.walk('.') for f in fs)\n"
        "total = sum(int(row['n']) for row in csv.DictReader(open('data.csv')))\n"
        "with open('out.csv', 'w') as f:\n"
        "    f.write(f'total\\n{total}\\n')\n"
    )
    with burst_kernel(state_dir, workdir, env) as kernel:
        first = kernel.ok(cell, timeout=240)
        assert "burst: working folder: sent 4 file(s)" in first.stderr, first.stderr
        assert "burst: out.csv came back into the notebook's folder" in first.stderr
        assert (workdir / "out.csv").read_text() == "total\n4\n"
        (head,) = _instances(ec2)
        machine_root = vms.machines[head["InstanceId"]].root
        here = kernel.ok("print(here)").stdout.strip()
        assert here.startswith(str(machine_root)) and here != str(workdir)
        # what the rules leave out never reached the node
        seen = kernel.ok("print(seen)").stdout.strip()
        assert seen == str([".burstignore", ".gitignore", "data.csv", "lib/helpers.txt"])
        assert not list(machine_root.rglob("token.txt")) and not list(machine_root.rglob("big.bin"))

        # run again: nothing was sent (out.csv came from the node, which kept it)
        again = kernel.ok(cell, timeout=120)
        assert "working folder: sent" not in again.stderr, again.stderr
        cache = kernel.ok("%burst cache").stdout
        assert "working folder, last cell: sent 0 file(s), 0 B; 5 unchanged" in cache, cache
        assert "out.csv came back" not in again.stderr  # the same bytes: nothing to write

        # a changed file is sent again, alone
        (workdir / "data.csv").write_text("n\n10\n")
        changed = kernel.ok(cell, timeout=120)
        assert "burst: working folder: sent 1 file(s)" in changed.stderr, changed.stderr
        assert (workdir / "out.csv").read_text() == "total\n10\n"

        # a conflict: the notebook's copy changes while the cell changes its own
        conflict = kernel.ok(
            "%%burst provider=aws\n"
            f"open({str(workdir / 'data.csv')!r}, 'w').write('n\\n99\\n')  # the user, meanwhile\n"
            "open('data.csv', 'w').write('n\\n-1\\n')\n",
            timeout=120,
        )
        assert "burst: data.csv changed in the notebook's folder while the cell ran" in (
            conflict.stderr
        ), conflict.stderr
        assert (workdir / "data.csv").read_text() == "n\n99\n"  # never overwritten

        # the cap, both ways: the folder is refused before anything runs ...
        kernel.ok("import os\nos.environ['DASK_BURST__WORKDIR__MAX_BYTES'] = '40 B'")
        refused = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=60)
        assert refused.traceback == [refused.evalue], refused.traceback
        assert "over burst.workdir.max-bytes (40 B; biggest: lib/helpers.txt 21 B" in refused.evalue
        assert "add them to .burstignore" in refused.evalue
        # ... and what a cell writes past it stays on the node
        kernel.ok("os.environ['DASK_BURST__WORKDIR__MAX_BYTES'] = '1 kB'")
        big = kernel.ok(
            "%%burst provider=aws\nopen('m.pt', 'wb').write(b'w' * 5000)\n", timeout=120
        )
        assert "they stay on the node" in big.stderr and "m.pt 4.88 kiB" in big.stderr
        assert not (workdir / "m.pt").exists()

        # burst.workdir: false: the cell runs in the node's own folder, nothing travels
        kernel.ok("os.environ['DASK_BURST__WORKDIR'] = 'false'")
        off = kernel.ok(
            "%%burst provider=aws\nimport os\nthere = os.getcwd()\n"
            "open('off.csv', 'w').write('x')\nhas_data = os.path.exists('data.csv')\n",
            timeout=120,
        )
        assert "working folder" not in off.stderr
        assert kernel.ok("print(there != here, has_data)").stdout.split() == ["True", "False"]
        assert not (workdir / "off.csv").exists()


# The ssh provider's own fixtures: a real sshd on 127.0.0.1, the folder its "hosts" use, and
# a kernel's settings for them (a notebook environment the hosts build).
sshd, hosts_dir, kernel_env = ssh_tests.sshd, ssh_tests.hosts_dir, ssh_tests.kernel_env


def test_on_two_ssh_hosts_every_rank_reads_the_folder_and_rank_0s_files_come_back(
    kernel_env, state_dir, workdir
):
    """Each node has its own copy; what rank 0 writes comes back, another node's files stay
    there; a background job's files come back with its results (``%burst wait``)."""
    _tree(workdir, {"data.csv": "n\n5\n"})
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        run = kernel.ok(
            "%%burst provider=ssh gpus=2 return=gather\n"
            "import os\n"
            "here = os.getcwd()\n"
            "read = open('data.csv').read()\n"
            "open(f'rank{burst.rank}.txt', 'w').write(str(burst.rank))\n",
            timeout=120,
        )
        assert "burst: working folder: sent 2 file(s), 8 B, to 2 nodes" in run.stderr, run.stderr
        assert "rank0.txt came back" in run.stderr
        shown = kernel.ok("print(len(set(here)), read == ['n\\n5\\n'] * 2)").stdout.split()
        assert shown == ["2", "True"]  # two folders, one per node, each the notebook's
        assert (workdir / "rank0.txt").read_text() == "0"
        assert not (workdir / "rank1.txt").exists()  # another node's file stays there

        # a cell that raises: what it wrote before its error comes back, as in the notebook
        failed = kernel.execute(
            "%%burst provider=ssh\nopen('partial.txt', 'w').write('so far')\n1 / 0\n",
            timeout=120,
        )
        assert failed.ename == "ZeroDivisionError"
        assert "partial.txt came back" in failed.stderr, failed.stderr
        assert (workdir / "partial.txt").read_text() == "so far"

        kernel.ok(
            "%%burst provider=ssh async name=writer\n"
            "open('report.txt', 'w').write(open('data.csv').read().upper())\n",
            timeout=120,
        )
        waited = kernel.ok("%burst wait writer", timeout=120)
        assert "report.txt came back" in waited.stderr, waited.stderr
        assert (workdir / "report.txt").read_text() == "N\n5\n"
