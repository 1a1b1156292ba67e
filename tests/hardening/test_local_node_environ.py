"""A local cluster's node starts with a minimal environment: what Python, CUDA and a cell's
libraries need, never the notebook's API keys (a cloud node never sees them either), unless
``burst.local.pass-env`` names one or a remote checkpoint store needs its credentials."""

from __future__ import annotations

import pytest

from jupyter_burst.clusters.local_environ import node_environ
from jupyter_burst.errors import OptionError
from tests.harness import burst_kernel, burst_processes

# What a notebook's kernel typically has in its environment, secrets and settings together.
KERNEL_ENVIRON = {
    "HF_TOKEN": "hf_" + "q" * 30,
    "WANDB_API_KEY": "w" * 40,
    "AWS_SECRET_ACCESS_KEY": "s" * 40,
    "PIP_INDEX_URL": "https://me:hunter22@pypi.example.org/simple",
    "OMP_NUM_THREADS": "3",
}
WITHHELD = {"WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "PIP_INDEX_URL"}


def test_a_local_nodes_cells_see_settings_not_the_kernels_secrets_unless_pass_env_names_one(
    state_dir, workdir
):
    env = {**KERNEL_ENVIRON, "DASK_BURST__LOCAL__PASS_ENV": "['HF_TOKEN']"}
    names = sorted(KERNEL_ENVIRON)
    with burst_kernel(state_dir, workdir, env) as kernel:
        here = kernel.ok(f"import os\nprint(sorted(set({names}) & set(os.environ)))")
        assert here.stdout.strip() == str(names)  # the notebook has every one of them
        there = kernel.ok(f"%%burst\nimport os\nprint(sorted(set({names}) & set(os.environ)))")
        assert there.stdout.strip() == "['HF_TOKEN', 'OMP_NUM_THREADS']"
        nodes = burst_processes(state_dir)
        assert nodes  # the head and its worker, looked at as this user can
        for process in nodes:
            assert not WITHHELD & set(process.environ()), process.cmdline()


def test_the_node_environment_keeps_settings_and_a_remote_stores_credentials_only():
    kernel = {
        **KERNEL_ENVIRON,
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
        "AWS_PROFILE": "work",
        "AWS_ACCESS_KEY_ID": "AKIA" + "A" * 16,
        "DASK_BURST__SOME_TOKEN": "t" * 20,
        "HTTPS_PROXY": "http://proxy.example.org:3128",
        "UV_INDEX_URL": "https://gho_abcdefghijklmnop@pypi.example.org/simple",  # a token as user
        "TRITON_CACHE_DIR": "/tmp/triton",
    }
    plain = node_environ(kernel, None)
    assert sorted(plain) == [
        "AWS_PROFILE", "CUDA_VISIBLE_DEVICES", "HTTPS_PROXY", "LC_ALL", "OMP_NUM_THREADS", "PATH",
        "TRITON_CACHE_DIR",
    ]  # fmt: skip
    to_s3 = node_environ(kernel, "s3://bucket/checkpoints", ["WANDB_API_KEY"])
    assert set(to_s3) - set(plain) == {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY",
    }  # fmt: skip
    assert node_environ(kernel, "/home/me/checkpoints") == plain
    with pytest.raises(OptionError, match=r"^burst: burst.local.pass-env is 5: give a list of"):
        node_environ(kernel, None, 5)
