"""Cells as real notebooks write them, under %%burst: IPython syntax, earlier cells' functions,
child processes. Each test is one shape that failed on main (issue #15), in a real kernel on
real Dask processes."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from tests.harness import REPO, burst_processes, cluster_record


def test_a_shell_escape_in_a_burst_cell_runs_on_the_rank_and_its_output_arrives_live(
    kernel, workdir
):
    """`!echo hi` was a SyntaxError. Its first line must arrive before the command ends."""
    release = workdir / "release"
    msg_id = kernel.kc.execute(
        "%%burst\n"
        "!echo first line; for i in $(seq 600); do [ -f release ] && break; sleep 0.1; done; echo done\n"
        "listing = !ls\n"
    )
    seen_before_release: list[str] = []

    def on_message(msg: dict) -> None:
        if msg["msg_type"] == "stream" and not release.exists():
            seen_before_release.append(msg["content"]["text"])
            if "first line" in "".join(seen_before_release):
                release.write_text("go")  # only now may the command finish

    run = kernel.collect(msg_id, 120, on_message)
    assert run.status == "ok", run.error_text
    assert "first line" in "".join(seen_before_release)  # live: before the command ended
    assert run.stdout.replace("\r\n", "\n").endswith("first line\ndone\n"), run.stdout
    check = kernel.ok(
        "print(type(listing).__name__, 'release' in listing, listing.n == '\\n'.join(listing))"
    )
    assert check.stdout.strip() == "SList True True"


def test_a_notebook_dataset_class_feeds_a_dataloader_with_worker_processes(kernel):
    """`DataLoader(ds, num_workers=2)` over an earlier cell's Dataset: was a PicklingError."""
    kernel.ok(
        "import torch\nfrom torch.utils.data import Dataset, DataLoader\n"
        "class Squares(Dataset):\n"
        "    def __len__(self):\n        return 10\n"
        "    def __getitem__(self, i):\n        return torch.tensor(float(i * i))\n"
        "ds = Squares()\n"
        "plain = [b.tolist() for b in DataLoader(ds, batch_size=4, num_workers=2)]\n"
    )
    kernel.ok(
        "%%burst\nimport os\n"
        "loader = DataLoader(ds, batch_size=4, num_workers=2)\n"
        "remote = [b.tolist() for b in loader]\n"
    )
    check = kernel.ok("print(remote == plain, remote)")
    assert check.stdout.startswith("True [[0.0, 1.0, 4.0, 9.0]"), check.stdout


def test_an_lru_cache_function_and_partials_of_it_resolve_on_the_worker(kernel):
    """A `functools.lru_cache` notebook function was `AttributeError: Can't get attribute`."""
    kernel.ok(
        "import functools, typing\n"
        "@functools.lru_cache\n"
        "def slow_square(x):\n    return x * x\n"
        "@functools.cache\n"
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "cube_of_3 = functools.partial(lambda f, x: f(x) * x, slow_square, 3)\n"
        "T = typing.TypeVar('T', int, float)\n"
        "UserId = typing.NewType('UserId', int)\n"
    )
    kernel.ok(
        "%%burst\n"
        "values = [slow_square(4), slow_square(4), fib(30), cube_of_3()]\n"
        "hits = slow_square.cache_info().hits\n"
        "kinds = (T.__constraints__, UserId(7), UserId.__name__)\n"
        "import torch, io\n"
        "class Net(torch.nn.Module):\n    pass\n"
        "buffer = io.BytesIO()\ntorch.save(Net(), buffer)  # pickles Net by its name in __main__\n"
        "saved = len(buffer.getvalue()) > 0\n"
    )
    check = kernel.ok("print(values, hits, kinds, saved)")
    assert (
        check.stdout.strip()
        == "[16, 16, 832040, 27] 1 ((<class 'int'>, <class 'float'>), 7, 'UserId') True"
    )


def test_the_ddp_tutorial_split_over_cells_runs_with_gpus_2(kernel):
    """pytorch/examples' multigpu_torchrun shape: imports, ddp_setup(), Trainer and main() in
    earlier cells, the burst cell just `main(...)`. Was "initialize the default process
    group twice". Its nccl becomes gloo on a CPU slot, and rank 0's weights equal one
    process's plain SGD over the same global batches."""
    kernel.ok(
        "import os, torch\nimport torch.nn.functional as F\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "from torch.utils.data.distributed import DistributedSampler\n"
        "from torch.nn.parallel import DistributedDataParallel as DDP\n"
        "from torch.distributed import init_process_group, destroy_process_group\n"
    )
    kernel.ok('def ddp_setup():\n    init_process_group(backend="nccl")\n')
    kernel.ok(
        "class Trainer:\n"
        "    def __init__(self, model, data, optimizer):\n"
        "        self.gpu_id = int(os.environ['LOCAL_RANK'])\n"
        "        self.model = DDP(model)\n"
        "        self.data, self.optimizer = data, optimizer\n"
        "    def _run_epoch(self, epoch):\n"
        "        self.data.sampler.set_epoch(epoch)\n"
        "        for x, y in self.data:\n"
        "            self.optimizer.zero_grad()\n"
        "            F.mse_loss(self.model(x), y).backward()\n"
        "            self.optimizer.step()\n"
        "        print(f'[GPU{self.gpu_id}] Epoch {epoch} | Steps: {len(self.data)}')\n"
        "    def train(self, max_epochs):\n"
        "        for epoch in range(max_epochs):\n"
        "            self._run_epoch(epoch)\n"
    )
    kernel.ok(
        "def load_train_objs():\n"
        "    torch.manual_seed(0)\n"
        "    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))\n"
        "    model = torch.nn.Linear(4, 1)\n"
        "    return data, model, torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "def main(total_epochs, batch_size):\n"
        "    ddp_setup()\n"
        "    dataset, model, optimizer = load_train_objs()\n"
        "    per_rank = batch_size // int(os.environ['WORLD_SIZE'])\n"
        "    data = DataLoader(dataset, batch_size=per_rank, sampler=DistributedSampler(dataset, shuffle=False))\n"
        "    Trainer(model, data, optimizer).train(total_epochs)\n"
        "    destroy_process_group()\n"
        "    return model.state_dict()\n"
    )
    run = kernel.ok("%%burst gpus=2\nweights = main(2, 16)\n", timeout=180)
    assert "[rank 0] [GPU0] Epoch 1 | Steps: 4" in run.stdout, run.stdout
    assert "[rank 1] [GPU1] Epoch 1 | Steps: 4" in run.stdout, run.stdout
    assert run.stderr.count('init_process_group(backend="nccl") on a CPU slot: it uses gloo') == 1
    check = kernel.ok(
        "dataset, model, optimizer = load_train_objs()\n"
        "for epoch in range(2):\n"
        "    for x, y in DataLoader(dataset, batch_size=16):\n"
        "        optimizer.zero_grad()\n"
        "        F.mse_loss(model(x), y).backward()\n"
        "        optimizer.step()\n"
        "print(all(torch.allclose(weights[k], v, atol=1e-6) for k, v in model.state_dict().items()))\n"
    )
    assert check.stdout.strip() == "True"


def test_a_script_that_makes_its_own_process_group_with_one_rank_leaves_none_behind(kernel):
    """gpus=1: the script's own init (env://, from the rank's torchrun variables) works, and
    the next cell on the same worker can make one again."""
    for _ in range(2):
        run = kernel.ok(
            "%%burst\nimport torch.distributed as dist\n"
            "dist.init_process_group(backend='nccl')\n"
            "size = dist.get_world_size()\n"
            "dist.destroy_process_group()\n"
            "left = dist.is_initialized()\n"
        )
        assert "it uses gloo" in run.stderr
        assert kernel.ok("print(size, left)").stdout.strip() == "1 False"


def test_a_pool_and_a_process_pool_map_a_notebook_function_and_their_prints_reach_the_cell(
    kernel,
):
    kernel.ok(
        "import multiprocessing\nfrom concurrent.futures import ProcessPoolExecutor\n"
        "def shout(x):\n    print(f'child {x}', flush=True)\n    return x * 10\n"
    )
    run = kernel.ok(
        "%%burst\n"
        "with multiprocessing.Pool(2) as pool:\n    pooled = pool.map(shout, range(3))\n"
        "with ProcessPoolExecutor(2) as executor:\n    mapped = list(executor.map(shout, range(3, 5)))\n"
        "method = multiprocessing.get_start_method()\n"
    )
    assert sorted(line for line in run.stdout.splitlines() if line.startswith("child")) == [
        f"child {i}" for i in range(5)
    ], run.stdout
    assert run.stderr == ""  # the spent pool and executor stay behind without a warning
    expected = kernel.ok("import multiprocessing\nprint(multiprocessing.get_start_method())")
    check = kernel.ok("print(pooled, mapped, method)")
    assert check.stdout.strip() == f"[0, 10, 20] [30, 40] {expected.stdout.strip()}"
    assert kernel.ok("print('pool' in dir())").stdout.strip() == "False"


def test_an_unknown_magic_is_one_line_and_nothing_starts(kernel, workdir):
    for cell, magic in [
        ("%who\nopen('ran.txt', 'w').write('x')", "%who"),
        ("x = 1\n%%writefile notes.txt\nhi", None),
        ("%%javascript\nalert(1)", "%%javascript"),
        ("%matplotlib qt\nx = 1", None),
        ("len?", "%pinfo"),
    ]:
        run = kernel.execute(f"%%burst\n{cell}\n")
        assert run.status == "error"
        assert run.traceback == [run.evalue] and run.evalue.startswith("burst: "), run.traceback
        assert "\n" not in run.evalue
        if magic:
            assert run.evalue.startswith(f"burst: {magic} does not run in a %%burst cell"), (
                run.evalue
            )
    assert not (workdir / "ran.txt").exists()
    assert cluster_record(kernel.state_dir) is None  # nothing started: $0
    assert burst_processes(kernel.state_dir) == []


def test_time_timeit_env_cd_and_matplotlib_magics_run_on_the_rank(kernel, workdir):
    (workdir / "data").mkdir()
    (workdir / "data" / "numbers.txt").write_text("1 2 3\n")
    run = kernel.ok(
        "%%burst\n"
        "%matplotlib inline\n"
        "%time total = sum(range(1000))\n"
        "%timeit -n 2 -r 2 sorted(range(50))\n"
        "%env STAGE=remote\n"
        "import os\nstage = os.environ['STAGE']\n"
        "%cd data\n"
        "numbers = open('numbers.txt').read().split()\n"
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\n"
        "where = os.getcwd()\n"
    )
    out = run.stdout
    assert "CPU times: user" in out and "Wall time:" in out, out
    assert "per loop (mean ± std. dev. of 2 runs, 2 loops each)" in out, out
    assert "env: STAGE=remote" in out and str(workdir / "data") in out
    assert any("image/png" in d for d in run.displays)
    check = kernel.ok("print(total, stage, numbers, where.endswith('data'))")
    assert check.stdout.strip() == "499500 remote ['1', '2', '3'] True"
    cell_magic = kernel.ok("%%burst\n%%time\nsquares = [i * i for i in range(10)]\nsum(squares)\n")
    assert "Wall time:" in cell_magic.stdout
    assert {"text/plain": "285"} in cell_magic.displays
    assert kernel.ok("print(squares[-1])").stdout.strip() == "81"
    outside = kernel.execute("%%burst\n%cd /\n")
    assert "leaves the cell's working folder" in outside.evalue


def test_the_cells_last_expression_is_shown_as_its_result(kernel):
    kernel.ok("base = 40")
    run = kernel.ok("%%burst\nanswer = base + 2\nanswer * 10\n")
    assert {"text/plain": "420"} in run.displays
    assert kernel.ok("print(_)").stdout.strip() == "420"  # the notebook's Out, as IPython's
    silent = kernel.ok("%%burst\nanswer * 10;\n")
    assert all("text/plain" not in d or "420" not in d["text/plain"] for d in silent.displays)


def test_input_in_a_burst_cell_is_one_line(kernel):
    """Called by the cell itself: refused before anything starts; called from a function of an
    earlier cell: the same line, at the cell's line that called it."""
    run = kernel.execute("%%burst\nname = input('name? ')\n")
    assert run.status == "error" and run.traceback == [run.evalue], run.traceback
    assert run.evalue.startswith("burst: input() cannot ask the notebook for input from a %%burst")
    assert cluster_record(kernel.state_dir) is None
    kernel.ok("def ask():\n    return input('name? ')\n")
    run = kernel.execute("%%burst\nname = ask()\n")
    assert "burst: input() cannot ask the notebook for input from a %%burst cell" in run.error_text
    assert "name = ask()" in run.error_text


def _tiny_wheel(folder: pathlib.Path) -> pathlib.Path:
    """A wheel made here (no package index): tinypkg 1.0, which says where it was imported."""
    import base64
    import hashlib
    import zipfile

    files = {
        "tinypkg/__init__.py": "import os\n\ndef where():\n    return __file__\n",
        "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    path = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_pip_install_in_a_burst_cell_installs_on_the_cluster_not_in_the_notebook(kernel, workdir):
    wheel = _tiny_wheel(workdir)
    run = kernel.ok(
        f"%%burst gpus=2\n%pip install --no-index {wheel}\nimport tinypkg\nwhere = tinypkg.where()\n",
        timeout=240,
    )
    assert "burst: pip install --no-index" in run.stderr and "once per node" in run.stderr
    assert str(kernel.state_dir / "packages") in kernel.ok("print(where)").stdout
    assert "ModuleNotFoundError" in kernel.execute("import tinypkg").ename  # the notebook's own env
    again = kernel.ok(
        "%%burst\n%pip uninstall -y tinypkg\nimport subprocess, sys\n"
        "gone = subprocess.run([sys.executable, '-c', 'import tinypkg']).returncode != 0\n"
    )
    assert kernel.ok("print(gone)").stdout.strip() == "True", again.stderr
    kernel.ok("%burst down", timeout=120)
    assert list((kernel.state_dir / "packages").iterdir()) == []  # it went with its cluster


def test_pip_install_in_a_burst_cell_installs_on_both_nodes_of_an_emulated_cloud_cluster(
    cloud, state_dir, workdir
):
    """gpus=2 on 1-GPU machines: a head and a worker node, each installs once, for itself."""
    from jupyter_burst.clusters.offers import Offer
    from tests.aws_cloud import REGION
    from tests.harness import burst_kernel
    from tests.test_aws_cluster import _inject_prices, _instances

    env, vms, ec2 = cloud
    _inject_prices(
        state_dir, [Offer("aws", "g4dn.xlarge", 1, "NVIDIA T4", 16.0, 4, 16.0, REGION, False, 0.5)]
    )
    wheel = _tiny_wheel(workdir)
    with burst_kernel(state_dir, workdir, env) as kernel:
        run = kernel.ok(
            f"%%burst provider=aws gpus=2 return=gather\n%pip install --no-index {wheel}\n"
            "import tinypkg\nwhere = tinypkg.where()\n",
            timeout=300,
        )
        assert "on every node of cluster 'default'" in run.stderr, run.stderr
        places = kernel.ok("print('\\n'.join(where))").stdout.split()
        nodes = _instances(ec2)
        assert len(nodes) == 2
        roots = sorted(str(vms.machines[n["InstanceId"]].root) for n in nodes)
        # each rank imported the copy its own machine installed
        assert sorted(next(r for r in roots if p.startswith(r)) for p in places) == roots, places
        kernel.ok("%burst down", timeout=120)


def test_shell_escapes_expand_notebook_variables_as_ipython_does(kernel):
    kernel.ok("n = 21\nfolder = 'notes'")
    run = kernel.ok("%%burst\n!echo value {n * 2} $folder\nnames = !echo {folder}-x\n")
    assert "value 42 notes" in run.stdout, run.stdout
    assert kernel.ok("print(names)").stdout.strip() == "['notes-x']"


def test_objects_that_hold_notebook_objects_keep_holding_them(kernel):
    """An optimizer made in a burst cell from the notebook's model holds the model's own
    parameters; a scheduler still holds its optimizer after a training cell."""
    kernel.ok(
        "%%burst\nimport torch\nmodel = torch.nn.Linear(2, 1)\nshared = []\nholder = {'list': shared}\n"
    )
    kernel.ok(
        "%%burst\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)\n"
        "shared.append(1)\n"
    )
    link = "print(opt.param_groups[0]['params'][0] is model.weight, sched.optimizer is opt, holder['list'] is shared)"
    assert kernel.ok(link).stdout.strip() == "True True True"
    run = kernel.ok(
        "%%burst\nx = torch.ones(4, 2)\n"
        "for _ in range(2):\n"
        "    opt.zero_grad()\n    model(x).sum().backward()\n    opt.step()\n    sched.step()\n"
    )
    assert "overridden" not in run.stderr, run.stderr  # the scheduler's step wrapper came along
    assert kernel.ok(link).stdout.strip() == "True True True"
    assert kernel.ok("print(opt.param_groups[0]['lr'])").stdout.strip() == "0.025"


def test_seeded_random_state_carries_from_cell_to_cell(kernel):
    kernel.ok(
        "%%burst\nimport random, numpy as np, torch\n"
        "random.seed(0); np.random.seed(0); torch.manual_seed(0)\n"
    )
    kernel.ok(
        "%%burst gpus=2\ndrawn = (random.random(), float(np.random.rand()), float(torch.rand(1)))\n"
    )
    kernel.ok("%%burst\nthen = (random.random(), float(np.random.rand()), float(torch.rand(1)))\n")
    check = kernel.ok(
        "random.seed(0); np.random.seed(0); torch.manual_seed(0)\n"
        "expected = [(random.random(), float(np.random.rand()), float(torch.rand(1))) for _ in range(2)]\n"
        "print(expected == [drawn, then])\n"
    )
    assert check.stdout.strip() == "True"


def test_dask_working_beside_a_seeded_cell_does_not_move_its_random_numbers():
    """Dask samples a long list's size with random.sample, on whatever thread stores it: in
    a worker that happens beside a running cell (the flake this test stands for)."""
    script = (
        "import random, sys, dask.sizeof, distributed, tornado.ioloop\n"
        "from jupyter_burst.wire import rng_state\n"
        "random.seed(0); expected = random.random()\n"
        "random.seed(0); dask.sizeof.sizeof(list(range(100))); unkept = random.random()\n"
        "rng_state.restore(rng_state.capture())  # what each cell does, on both sides\n"
        "random.seed(0); dask.sizeof.sizeof(list(range(100))); kept = random.random()\n"
        "own = [m for m in ('distributed.comm.core', 'distributed.utils_comm', 'tornado.ioloop')"
        " if sys.modules[m].random is not random]\n"
        "print(unkept != expected, kept == expected, len(own))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.stdout.split() == ["True", "True", "3"], done.stderr


def test_classes_with_slots_keywords_cached_properties_and_singledispatch_travel(kernel):
    kernel.ok(
        "%%burst\nimport functools\n"
        "class Plugin:\n    registry = {}\n"
        "    def __init_subclass__(cls, name, **kw):\n"
        "        super().__init_subclass__(**kw)\n        Plugin.registry[name] = cls\n"
        "class CSV(Plugin, name='csv'):\n    pass\n"
        "class Vector:\n    __slots__ = ('x', 'y')\n"
        "    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
        "class Circle:\n    def __init__(self, r):\n        self.r = r\n"
        "    @functools.cached_property\n    def area(self):\n        return 3 * self.r ** 2\n"
        "@functools.singledispatch\ndef describe(x):\n    return 'thing'\n"
        "@describe.register\ndef _(x: int):\n    return 'int'\n"
    )
    kernel.ok(
        "%%burst\nclass JSON(Plugin, name='json'):\n    pass\n"
        "v = Vector(1, 2)\nc = Circle(2)\nkinds = (describe(1), describe('a'), c.area)\n"
    )
    check = kernel.ok(
        "print(sorted(Plugin.registry), Plugin.registry['csv'] is CSV, "
        "hasattr(v, '__dict__'), v.x, kinds, Circle(3).area)"
    )
    assert check.stdout.strip() == "['csv', 'json'] True False 1 ('int', 'thing', 12) 27"


def test_writefile_and_bash_cell_magics_run_on_the_rank(kernel, workdir):
    run = kernel.ok("%%burst\n%%writefile notes.txt\nfirst line\nsecond line\n")
    assert "Writing notes.txt" in run.stdout
    assert (workdir / "notes.txt").read_text() == "first line\nsecond line\n"
    run = kernel.ok("%%burst\n%%bash\necho from bash\nwc -l < notes.txt\necho oops >&2\n")
    assert run.stdout.split() == ["from", "bash", "2"] and run.stderr.strip() == "oops"


def test_a_figure_left_open_is_shown_after_the_cells_result_and_a_figure_result_as_an_image(
    kernel,
):
    kinds: list[str] = []
    msg_id = kernel.kc.execute(
        "%%burst\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nplt.bar([1, 2], [3, 4])\n"
    )

    def on_message(msg: dict) -> None:
        if msg["msg_type"] in ("execute_result", "display_data"):
            data = msg["content"]["data"]
            if "image/png" in data or msg["msg_type"] == "execute_result":
                kinds.append(msg["msg_type"])

    assert kernel.collect(msg_id, 120, on_message).status == "ok"
    assert kinds == ["execute_result", "display_data"]  # Out[n], then the figure: as inline
    shown = kernel.ok("%%burst\nplt.close(fig)\nfig\n")
    assert any("image/png" in d for d in shown.displays)


def test_from_imports_come_back_as_the_notebooks_own_imports(kernel):
    """tqdm.auto is the console bar on a worker and the notebook bar in a notebook."""
    kernel.ok("%%burst\nfrom tqdm.auto import tqdm as auto_tqdm\n")
    check = kernel.ok("import tqdm.auto\nprint(auto_tqdm is tqdm.auto.tqdm)")
    assert check.stdout.strip() == "True"
