"""The notebook's environment travels to bare cloud machines (issue #17).

Every machine of the emulated cloud is bare (tests/vm_emulator.py): a plain interpreter, no
package, the wheelhouse as its package index. The kernel runs in a notebook environment of
its own (tests/notebook_env.py) that has ``tabulate``, which no machine has.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

from jupyter_burst.clusters.aws import sdk
from tests.aws_cloud import REGION
from tests.harness import REPO, burst_kernel, wait_for
from tests.notebook_env import (
    KERNEL_PYTHON,
    WHEELHOUSE,
    fake_distribution,
    make_notebook_env,
    uv_binary,
    with_a_macos_only_package,
)
from tests.test_aws_cluster import _instances

ARCHIVES = "jupyter-burst/envs/"


def _archives(env: dict[str, str]) -> list[str]:
    s3 = sdk.client("s3", REGION, endpoint_url=env["AWS_ENDPOINT_URL"])
    try:
        listed = s3.list_objects_v2(Bucket="burst-test", Prefix=ARCHIVES).get("Contents", [])
    except Exception:  # no bucket yet
        return []
    return [o["Key"] for o in listed]


def _machine(vms, ec2, cluster_tag: str) -> pathlib.Path:
    """The emulated root folder of the cluster's one machine."""
    (node,) = [
        i
        for i in _instances(ec2)
        if any(t["Value"].startswith(f"{cluster_tag}-") for t in i.get("Tags", []))
    ]
    return vms.machines[node["InstanceId"]].root


def _console(vms, ec2, cluster_tag: str) -> str:
    """The boot log of the cluster's one machine (its user data's output)."""
    return (_machine(vms, ec2, cluster_tag) / "console.log").read_text()


def test_a_bare_machine_gets_the_notebooks_packages_and_the_next_cluster_unpacks_them(
    cloud, state_dir, workdir
):
    env, vms, ec2 = cloud
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.ok(
            "%%burst provider=aws cluster=first\nimport sys, tabulate\n"
            "where = (tabulate.__file__, sys.prefix)\n",
            timeout=240,
        )
        assert "burst: environment " in run.stdout, run.stdout
        first = _console(vms, ec2, "first")
        assert " built with uv in " in first, first
        roots = [str(m.root) for m in vms.machines.values()]
        module, prefix = json.loads(kernel.ok("import json; print(json.dumps(where))").stdout)
        # the node's own copy, in the environment it built (not the notebook's, not the tests')
        assert any(module.startswith(r) and prefix == f"{r}/env" for r in roots), (module, prefix)

        # Where the start spent its time, the node's own environment phase among it.
        (start,) = [
            ln for ln in kernel.ok("%burst status").text.splitlines() if "first (aws) started" in ln
        ]
        assert "launching 1/1" in start and "booting" in start, start
        assert "environment " in start and " → running" in start, start

        wait_for(lambda: _archives(env), 60, "the head to store the environment's archive")
        shown = kernel.ok("%burst env").stdout
        assert "clusters with it: first (aws)" in shown, shown
        assert "(the next node unpacks it)" in shown, shown

        kernel.ok("%%burst provider=aws cluster=second\nimport tabulate\n", timeout=240)
        second = _console(vms, ec2, "second")
        assert "unpacked from its archive" in second, second
        # no resolver, no installer: uv never ran on the second machine
        assert "Resolved" not in second and "Installed" not in second, second

        # The boot script points the workers at the metadata service, and its spot notice
        # reaches a cell there.
        script = _machine(vms, ec2, "second").joinpath("user-data").read_text()
        assert 'export DASK_BURST__PREEMPTION__URL="$IMDS"' in script
        vms.imds.notice = {"action": "terminate", "time": "2026-12-06T08:22:00Z"}
        run = kernel.ok(
            "%%burst provider=aws cluster=second\nimport time\n"
            "deadline = time.monotonic() + 60\n"
            "while not burst.preempting and time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\nheard = bool(burst.preempting)\n",
            timeout=120,
        )
        assert kernel.ok("print(heard)").stdout.strip() == "True"
        said = run.stdout + run.stderr
        assert "burst: this node will be reclaimed at 2026-12-06T08:22:00Z" in said, said
        kernel.ok("%burst down", timeout=120)


def test_a_changed_package_rebuilds_only_what_changed(cloud, state_dir, workdir, tmp_path):
    env, vms, ec2 = cloud
    python = make_notebook_env(tmp_path / "notebook", tmp_path / "uv-cache")
    env = {**env, KERNEL_PYTHON: str(python)}
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=aws cluster=before\nx = 1\n", timeout=240)
        wait_for(lambda: _archives(env), 60, "the head to store the environment's archive")
        kernel.ok("%burst down", timeout=120)
    # The notebook installs one more package ...
    subprocess.run(
        [uv_binary(), "pip", "install", "--quiet", "--python", str(python), "--no-index",
         "--find-links", str(WHEELHOUSE), "editables"],
        check=True,
        env={"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    with burst_kernel(state_dir, workdir, env) as kernel:
        kernel.ok("%%burst provider=aws cluster=after\nimport editables\n", timeout=240)
        after = _console(vms, ec2, "after")
        # ... and the node starts from the stored environment: uv adds that one only. (And
        # the wheel built in the notebook again: it lies in the machine's own folder, whose
        # path differs from machine to machine here; on EC2 it is the same path.)
        assert "starting from " in after, after
        added = {ln.split()[1].split("==")[0] for ln in after.splitlines() if ln.startswith(" + ")}
        assert "editables" in added and added <= {"editables", "jupyter-burst"}, after
        kernel.ok("%burst down", timeout=120)
    assert len(_archives(env)) == 2


def test_a_package_only_macos_needs_is_left_out_in_one_line(
    state_dir, workdir, tmp_path, notebook_python, env_cache
):
    """A notebook on a Mac has appnope (ipykernel asks for it on Darwin only)."""
    from tests.notebook_env import index_env

    site = tmp_path / "site"
    fake_distribution(site, "appnope", "0.1.4")
    env = {
        **index_env(env_cache),
        KERNEL_PYTHON: str(notebook_python),
        "PYTHONPATH": f"{REPO}:{site}",
    }
    with burst_kernel(state_dir, workdir, env) as kernel:
        shown = kernel.ok("%burst env", timeout=120).stdout
    (line,) = [ln for ln in shown.splitlines() if "appnope" in ln]
    assert "appnope 0.1.4: left out (only needed off Linux: ipykernel asks for it" in line
    packages = next(ln for ln in shown.splitlines() if ln.strip().startswith("packages:"))
    assert "appnope" not in packages and "tabulate==" in packages


def test_a_package_with_no_linux_wheel_is_refused_before_anything_launches(
    cloud, state_dir, workdir, tmp_path
):
    env, vms, ec2 = cloud
    env = with_a_macos_only_package(env, tmp_path)
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=120)
    assert run.traceback == [run.evalue], run.error_text
    assert run.evalue.startswith("burst: maconly 1.0 has no wheel for Linux"), run.evalue
    assert "nothing was launched" in run.evalue and "burst.env.exclude: [maconly]" in run.evalue
    assert _instances(ec2) == [] and vms.machines == {}
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == ["default"]


def test_a_python_minor_the_nodes_cannot_match_is_refused_before_anything_launches(
    cloud, state_dir, workdir
):
    env, vms, ec2 = cloud
    env = {**env, "DASK_BURST__ENV__PYTHON": "3.12"}
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=120)
    assert run.traceback == [run.evalue], run.error_text
    assert run.evalue.startswith("burst: burst.env.python is 3.12 but this kernel runs Python 3.11")
    assert _instances(ec2) == [] and vms.machines == {}


def test_a_boot_that_fails_ends_its_machine_and_the_cell_says_where(cloud, state_dir, workdir):
    env, vms, ec2 = cloud
    broken = vms.bin / "uv"  # every machine's uv now fails, as on a full disk
    broken.unlink()
    broken.write_text("#!/bin/bash\necho 'uv: No space left on device' >&2\nexit 2\n")
    broken.chmod(0o755)
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.execute("%%burst provider=aws\nx = 1\n", timeout=240)
    assert run.ename == "ClusterError", run.error_text
    assert "stopped before its scheduler came up (its boot said: failed (exit 2" in run.evalue
    (machine,) = vms.machines.values()
    assert machine.off and machine.why == "shutdown -h now"  # at once, not at the dead man's
    assert "uv: No space left on device" in (machine.root / "console.log").read_text()
    assert _instances(ec2) == []
