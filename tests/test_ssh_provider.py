"""The ``ssh`` provider against a real sshd on 127.0.0.1: two "hosts" (the same sshd twice).

The sshd is this test's own: its config, host key and authorized_keys in the test's folder,
on a free port of 127.0.0.1. The kernel logs in with the system ssh client, so the whole
path a real on-prem cluster takes runs: keys over ssh's stdin, nodes started detached, TLS
between the kernel and the nodes, the watchdog ending them with no kernel left.

The kernels run in the notebook environment of tests/notebook_env.py (its spec is small and
in the wheelhouse, and it has ``tabulate``); the "host" builds that environment with uv from
the wheelhouse into ``<remote-dir>/envs/<hash>`` and its nodes run it. Its logins get a bare
PATH (no uv on it: the kernel sends its own) and uv told to use the system's Python.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

from jupyter_burst.clusters import start_phases
from jupyter_burst.clusters.ssh import environment, remote
from jupyter_burst.clusters.ssh.hosts import parse_host
from jupyter_burst.errors import ClusterError
from jupyter_burst.store.ledger import Ledger
from tests.aws_fakes import free_port
from tests.harness import burst_kernel, wait_for
from tests.notebook_env import (
    KERNEL_PYTHON,
    WHEELHOUSE,
    base_python,
    index_env,
    uv_binary,
    with_a_macos_only_package,
)
from tests.sshd_server import Sshd, running_sshd

PRICE = 2.5  # the chargeback price of one GPU-hour


@pytest.fixture
def sshd(tmp_path: pathlib.Path) -> Iterator[Sshd]:
    """A real sshd on 127.0.0.1 that lets this user in with a fresh key; stopped afterwards."""
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def hosts_dir(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """Where the "hosts" keep their nodes; whatever still runs from there is ended afterwards."""
    path = tmp_path / "hosts"
    path.mkdir()
    try:
        yield path
    finally:
        procs = node_processes(path)
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(procs, timeout=10)


def node_processes(root: pathlib.Path) -> list[psutil.Process]:
    """The live node and worker processes started under ``root`` (zombies are gone already)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            in_cmdline = str(root) in " ".join(proc.info["cmdline"] or [])
            if in_cmdline or proc.environ().get("JUPYTER_BURST_NODE", "").startswith(str(root)):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def kernel_env(
    sshd: Sshd, hosts_dir: pathlib.Path, notebook_python: pathlib.Path, env_cache: pathlib.Path
) -> dict[str, str]:
    """Two host entries, one GPU slot each, both this sshd: a head and one worker node; a
    kernel in the notebook environment, resolving from the wheelhouse (as the host installs)."""
    entry = f"{sshd.user}@127.0.0.1 gpus=1 port={sshd.port} python=python3"
    return {
        "DASK_BURST__SSH__HOSTS": json.dumps([entry, entry]),
        "DASK_BURST__SSH__IDENTITY": str(sshd.identity),
        "DASK_BURST__SSH__KNOWN_HOSTS": str(sshd.known_hosts),  # the user trusts this host
        "DASK_BURST__SSH__PRICE_PER_GPU_HOUR": str(PRICE),
        "DASK_BURST__SSH__REMOTE_DIR": str(hosts_dir),
        **index_env(env_cache),
        KERNEL_PYTHON: str(notebook_python),
    }


def test_a_cell_runs_on_both_hosts_and_down_ends_every_node(
    kernel_env, hosts_dir, state_dir, workdir
):
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        result = kernel.ok(
            "%%burst provider=ssh gpus=2 return=gather\n"
            "import os\n"
            "where = os.environ['JUPYTER_BURST_STATE_DIR']\n"
            "rank = burst.rank\n",
            timeout=180,  # the host builds the notebook's environment first
        )
        assert result.status == "ok"
        shown = kernel.ok("import json; print(json.dumps(dict(zip(rank, where))))").stdout
        # Rank 0 and rank 1 ran under the head's and the worker node's folders.
        ranks = {int(rank): path for rank, path in json.loads(shown).items()}
        assert sorted(ranks) == [0, 1]
        nodes = {pathlib.Path(path).parent.name for path in ranks.values()}
        assert nodes == {"0", "1"}, ranks
        assert all(path.startswith(str(hosts_dir)) for path in ranks.values())
        assert len(node_processes(hosts_dir)) >= 4  # two nodes, a worker process each
        # The TLS key reached each host on ssh's stdin, and is this user's only.
        keys = list(hosts_dir.glob("*/*/tls/node.key"))
        assert len(keys) == 2 and all(k.stat().st_mode & 0o077 == 0 for k in keys)

        ledger = Ledger(state_dir / "ledger.sqlite")
        rows = ledger.query("SELECT * FROM nodes WHERE provider = 'ssh' ORDER BY role")
        assert [r["role"] for r in rows] == ["head", "worker"]
        assert all(r["price_per_hour"] == PRICE and r["notional"] == 1 for r in rows), rows
        assert all(r["stopped"] is None for r in rows)
        # Its start, phase by phase: the environment built on the one host both entries
        # name (the pre-flight's time in it: its first phase takes the place of the
        # launching the driver assumed), both nodes launched, then both workers joined.
        (start,) = start_phases.recent(ledger, 0)
        assert start.state == "running" and start.cluster_id == rows[0]["cluster_id"]
        assert [p.label() for p in start.phases] == [
            "quote",
            "environment built 1/1",
            "launching 2/2",
            "workers joined 2/2",
        ]

        kernel.ok("%burst down")
        wait_for(lambda: not node_processes(hosts_dir), 30, "every node process to end")
        rows = ledger.query("SELECT * FROM nodes WHERE provider = 'ssh'")
        assert len(rows) == 2 and all(r["stopped"] is not None for r in rows), rows
        assert not list(hosts_dir.glob("*/*/tls/node.key"))  # a stopped node's key is removed


def test_an_idle_cluster_ends_its_nodes_without_the_kernel(
    kernel_env, hosts_dir, state_dir, workdir
):
    idle = 10  # seconds: longer than a worker node takes to join on a slow machine
    # A fixed scheduler port: the worker node starts alongside the head, not after it.
    env = dict(kernel_env, DASK_BURST__SSH__SCHEDULER_PORT=str(free_port()))
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok(f"%%burst provider=ssh gpus=2 idle={idle}s\nx = 1\n", timeout=180)
        assert kernel.ok("print(x)").stdout.strip() == "1"
        assert node_processes(hosts_dir)
        kernel.kill()  # no kernel, no `%burst down`: only the nodes' watchdogs are left
        wait_for(lambda: not node_processes(hosts_dir), idle + 60, "the idle nodes to end")
    log = next(hosts_dir.glob("*/0/node.log")).read_text()
    assert "idle for" in log, log[-2000:]


@pytest.mark.parametrize(
    "entry, message",
    [
        ("gpu1 gpus=two", "burst: burst.ssh.hosts entry 1 ('gpu1 gpus=two') has gpus=two"),
        ("me@gpu1", "burst: burst.ssh.hosts entry 1 ('me@gpu1') does not say how many GPUs"),
        ("me@gpu1 gpus=2 colour=red", "burst: burst.ssh.hosts entry 1"),
        ({"gpus": 2}, "burst: burst.ssh.hosts entry 1 ({'gpus': 2}) names no host"),
        (7, "burst: burst.ssh.hosts entry 1 (7) is neither a string nor a mapping"),
    ],
)
def test_a_bad_hosts_entry_is_one_line_naming_the_fix(entry, message):
    with pytest.raises(ClusterError) as info:
        parse_host(entry)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text


def test_a_host_that_refuses_the_login_shows_sshs_own_reason(sshd, tmp_path, monkeypatch):
    from jupyter_burst import config
    from jupyter_burst.clusters.ssh import channel

    monkeypatch.setenv("DASK_BURST__SSH__IDENTITY", str(tmp_path / "sshd" / "host_key"))
    monkeypatch.setenv("DASK_BURST__SSH__KNOWN_HOSTS", str(sshd.known_hosts))
    config.refresh()
    try:
        host = parse_host(f"{sshd.user}@127.0.0.1 gpus=1 port={sshd.port}")
        with pytest.raises(ClusterError) as info:
            channel.helper(host, tmp_path, ["alive", str(tmp_path), "1"])
    finally:
        monkeypatch.delenv("DASK_BURST__SSH__IDENTITY")
        monkeypatch.delenv("DASK_BURST__SSH__KNOWN_HOSTS")
        config.refresh()
    text = str(info.value)
    assert text.startswith(f"burst: ssh to {sshd.user}@127.0.0.1 (port {sshd.port}) failed: ")
    assert "Permission denied" in text and "\n" not in text, text


@pytest.mark.hardening
def test_a_host_not_trusted_yet_is_refused_unless_new_keys_are_accepted_which_is_said(
    sshd, tmp_path, monkeypatch, capsys
):
    from jupyter_burst import config
    from jupyter_burst.clusters.ssh import channel

    monkeypatch.setenv("DASK_BURST__SSH__IDENTITY", str(sshd.identity))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a user whose known_hosts lacks it
    config.refresh()
    host = parse_host(f"{sshd.user}@127.0.0.1 gpus=1 port={sshd.port}")
    state = tmp_path / "state"
    state.mkdir()
    try:
        with pytest.raises(ClusterError) as info:
            channel.helper(host, state, ["alive", str(tmp_path / "nodes"), "1"])
        text = str(info.value)
        assert text.startswith(f"burst: the host key of {sshd.user}@127.0.0.1 (port {sshd.port})")
        assert "is not trusted yet, so nothing was sent to it" in text and "\n" not in text
        assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> ~/.ssh/known_hosts" in text, text
        assert "burst.ssh.accept-new-host-keys: true" in text
        assert not (tmp_path / "nodes").exists()  # the helper never ran there

        monkeypatch.setenv("DASK_BURST__SSH__ACCEPT_NEW_HOST_KEYS", "true")
        config.refresh()
        channel.helper(host, state, ["alive", str(tmp_path / "nodes"), "1"])
    finally:
        for name in ("DASK_BURST__SSH__IDENTITY", "DASK_BURST__SSH__ACCEPT_NEW_HOST_KEYS"):
            monkeypatch.delenv(name, raising=False)
        config.refresh()
    said = capsys.readouterr().err
    assert f"burst: trusted the new ED25519 host key of {sshd.user}@127.0.0.1" in said, said
    kept = (state / "ssh_known_hosts").read_text()
    assert kept.split()[1:] == sshd.known_hosts.read_text().split()[1:3]  # that key, kept


@pytest.mark.hardening
def test_a_host_whose_key_changed_is_refused_and_nothing_reaches_it(
    kernel_env, sshd, hosts_dir, state_dir, workdir, tmp_path
):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    # What the user trusted for this host is another key than the one it now shows.
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {other.with_suffix('.pub').read_text()}")
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        run = kernel.execute("%%burst provider=ssh\nx = 1\n", timeout=120)
    assert run.traceback == [run.evalue], run.error_text
    assert f"the host key of {sshd.user}@127.0.0.1 (port {sshd.port}) has changed" in run.evalue
    assert "so nothing was sent to it" in run.evalue, run.evalue
    # no node, no key bundle, not even the helper's folder
    assert list(hosts_dir.iterdir()) == [] and not node_processes(hosts_dir)


def test_the_offer_is_the_configured_chargeback_price(monkeypatch):
    from jupyter_burst import config
    from jupyter_burst.clusters.offers import OfferRequest
    from jupyter_burst.clusters.ssh import SshProvider

    monkeypatch.setenv("DASK_BURST__SSH__HOSTS", json.dumps(["a@h1 gpus=4", "a@h2 gpus=4"]))
    monkeypatch.setenv("DASK_BURST__SSH__PRICE_PER_GPU_HOUR", "1.5")
    config.refresh()
    try:
        (offer,) = SshProvider().offers(OfferRequest(gpus=8))
        assert SshProvider().offers(OfferRequest(gpus=9)) == []
    finally:
        for name in ("DASK_BURST__SSH__HOSTS", "DASK_BURST__SSH__PRICE_PER_GPU_HOUR"):
            monkeypatch.delenv(name)
        config.refresh()
    assert (offer.gpus, offer.price_per_hour, offer.notional) == (4, 6.0, True)


def test_no_hosts_configured_says_how():
    from jupyter_burst.clusters.ssh.hosts import configured_hosts

    with pytest.raises(ClusterError) as info:
        configured_hosts()
    assert str(info.value).startswith("burst: provider=ssh has no hosts; set burst.ssh.hosts")


def test_a_background_job_runs_on_a_tls_cluster_and_its_results_come_back(
    kernel_env, hosts_dir, state_dir, workdir
):
    # The head node runs a background job through its own client of its TLS scheduler.
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        kernel.ok("%%burst provider=ssh async name=tls-job\ny = 6 * 7\n", timeout=180)
        result = kernel.ok("%burst wait tls-job", timeout=90)
        assert "error" not in result.stderr.lower(), result.stderr
        assert kernel.ok("print(y)").stdout.strip() == "42"
        kernel.ok("%burst down")
        wait_for(lambda: not node_processes(hosts_dir), 30, "every node process to end")


# the environment travels (issue #17) ------------------------------------------------------


def _login_has_uv(sshd: Sshd) -> bool:
    """Whether the host's login finds a uv of its own (then the kernel sends none)."""
    places = " ".join(["uv", *(p.replace("~", "$HOME") for p in remote._UV_PLACES)])
    done = subprocess.run(
        ["ssh", "-p", str(sshd.port), "-i", str(sshd.identity), "-o", "BatchMode=yes",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         f"{sshd.user}@127.0.0.1", f"for u in {places}; do command -v $u; done"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return bool(done.stdout.strip())


def _printed_hash(stdout: str) -> str:
    """The environment's hash, as the pre-flight's first line says it."""
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("burst: environment ")]
    return line.split()[2]


def test_a_host_builds_the_notebooks_environment_once_and_the_next_cluster_reuses_it(
    sshd, kernel_env, hosts_dir, state_dir, workdir
):
    target = f"{sshd.user}@127.0.0.1"
    envs = hosts_dir.resolve() / "envs"
    with burst_kernel(state_dir, workdir, kernel_env) as kernel:
        run = kernel.ok(
            "%%burst provider=ssh cluster=first\nimport sys, tabulate\n"
            "where = (tabulate.__file__, sys.prefix)\n",
            timeout=180,
        )
        short = _printed_hash(run.stdout)
        assert f"burst: {target}: environment {short} built in " in run.stdout, run.stdout
        (folder,) = [p for p in envs.iterdir() if p.name.startswith(short)]
        module, prefix = json.loads(kernel.ok("import json; print(json.dumps(where))").stdout)
        # The node's own copy of tabulate, in the environment built on the host: not the
        # notebook's, not the host Python's (which has none), not the tests'.
        assert prefix == str(folder) and module.startswith(f"{folder}/lib/"), (module, prefix)
        built = folder / ".burst-built"
        first = (built.stat().st_mtime_ns, built.read_text())
        if not _login_has_uv(sshd):
            # The host had no uv: the kernel sent its own, kept beside the environments.
            assert json.loads(first[1])["uv"] == str(envs / "bin" / "uv")
        shown = kernel.ok("%burst env").stdout
        assert "clusters with it: first (ssh)" in shown, shown
        kernel.ok("%burst down", timeout=60)

        run = kernel.ok(
            "%%burst provider=ssh cluster=second\nimport sys, tabulate\nagain = sys.prefix\n",
            timeout=120,
        )
        assert f"burst: {target}: environment {short} cached" in run.stdout, run.stdout
        assert " built in " not in run.stdout, run.stdout
        assert kernel.ok("print(again)").stdout.strip() == str(folder)
        # Nothing was built again: the one build's marker as it was, no build folder left.
        assert (built.stat().st_mtime_ns, built.read_text()) == first
        assert not [p for p in envs.iterdir() if p.name.startswith(".build-")]
        latest = start_phases.recent(Ledger(state_dir / "ledger.sqlite"), 0)[0]
        assert "environment cached" in [p.label() for p in latest.phases], latest.phases
        kernel.ok("%burst down", timeout=60)


def test_a_package_with_no_linux_wheel_is_refused_before_any_host_is_asked(
    kernel_env, hosts_dir, state_dir, workdir, tmp_path
):
    env = with_a_macos_only_package(kernel_env, tmp_path)
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.execute("%%burst provider=ssh\nx = 1\n", timeout=120)
    assert run.traceback == [run.evalue], run.error_text
    assert run.evalue.startswith("burst: maconly 1.0 has no wheel for Linux"), run.evalue
    assert "nothing was launched" in run.evalue and "burst.env.exclude: [maconly]" in run.evalue
    # No node, no environment, not even a login: ssh never ran (it would know the host now).
    assert list(hosts_dir.iterdir()) == [] and not node_processes(hosts_dir)
    assert not (state_dir / "ssh_known_hosts").exists()


def test_two_kernels_building_one_environment_at_once_share_one_build(tmp_path):
    """The host side alone (remote.py, as ssh runs it, with a plain Python): two builds of
    the same hash at the same time make one environment; the second waits, then finds it."""
    envs = tmp_path / "envs"
    lock = _TinyLock("tabulate==0.10.0\n")
    payload = environment.payload(lock, uv_binary())  # this host has no uv: the kernel's
    args = ["env", str(envs), "f" * 32, f"{sys.version_info.major}.{sys.version_info.minor}"]
    args += ["only-system", "--", "--no-index", "--find-links", str(WHEELHOUSE)]
    host_bin = tmp_path / "bin"
    host_bin.mkdir()
    (host_bin / f"python{sys.version_info.major}.{sys.version_info.minor}").symlink_to(
        base_python()
    )
    env = {
        "PATH": f"{host_bin}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "UV_PYTHON_DOWNLOADS": "never",
    }
    command = [base_python(), "-I", "-c", pathlib.Path(remote.__file__).read_text(), *args]
    asked = subprocess.run(command, input=b"", capture_output=True, env=env, timeout=60)
    assert json.loads(asked.stdout)["env"] == "missing", asked.stderr[-2000:]
    builds = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(2)
    ]
    answers = [json.loads(b.communicate(payload, timeout=300)[0]) for b in builds]
    assert sorted(a["env"] for a in answers) == ["built", "cached"], answers
    python = envs / ("f" * 32) / "bin" / "python"
    assert {a["python"] for a in answers} == {str(python)}
    done = subprocess.run(
        [str(python), "-c", "import sys, tabulate; print(sys.prefix)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == str(envs / ("f" * 32)), done.stderr
    assert not [p for p in envs.iterdir() if p.name.startswith(".build-")]


@dataclass(frozen=True)
class _TinyLock:
    """What environment.payload reads of a NodeLock: its text and the wheels built here."""

    lines: str
    wheels: tuple = ()

    def text(self) -> str:
        return self.lines


def test_a_host_without_uv_and_a_kernel_whose_uv_cannot_run_there_is_told_to_install_uv(
    monkeypatch,
):
    import platform

    host = parse_host("me@gpu1 gpus=2")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    missing = {"env": "missing", "uv": "", "system": "Linux", "machine": "x86_64"}
    with pytest.raises(ClusterError) as info:
        environment._uv_to_send(host, missing)
    text = str(info.value)
    assert text.startswith(f"burst: install uv on me@gpu1 ({environment.UV_INSTALL})"), text
    assert "Darwin aarch64" in text and "Linux x86_64" in text and "\n" not in text
    assert environment._uv_to_send(host, dict(missing, uv="/usr/bin/uv")) is None
