"""%%burst in a real kernel on real Dask processes: what travels, what comes back, errors, output."""

from __future__ import annotations

import os
import pathlib

from tests.harness import cluster_record


def test_cell_runs_in_a_worker_process_and_its_results_land_in_the_notebook(kernel):
    kernel.ok("import os\nkernel_pid = os.getpid()\nbase = 40")
    run = kernel.ok(
        "%%burst\nimport os\nworker_pid = os.getpid()\nanswer = base + 2\nprint('on the worker')"
    )
    assert "on the worker" in run.stdout
    check = kernel.ok("print(answer, worker_pid != kernel_pid, 'base' in dir())")
    assert check.stdout.strip() == "42 True True"
    record = cluster_record(kernel.state_dir)
    # mutual TLS on loopback too: another user of the machine cannot connect (tests/hardening)
    assert record is not None and record["scheduler"].startswith("tls://127.0.0.1:")


def test_bad_options_give_one_line_and_the_cell_does_not_run(kernel, workdir):
    for line, expected in [
        ("gpu=1", "burst: unknown option 'gpu' (did you mean 'gpus'?)"),
        ("gpus=0", "burst: gpus=0 is out of range"),
        ("gpus=1 gpus=1", "burst: option 'gpus' is given twice"),
        ("idle=never", "burst: idle=never is not a duration"),
    ]:
        run = kernel.execute(f"%%burst {line}\nopen('ran.txt', 'w').write('x')\n")
        assert run.status == "error"
        assert run.traceback == [run.evalue] and run.evalue.startswith(expected), run.traceback
    assert not (workdir / "ran.txt").exists()
    assert cluster_record(kernel.state_dir) is None  # nothing was started: $0 for a typo


def test_an_unpicklable_variable_is_named_with_the_way_out_before_anything_starts(kernel):
    kernel.ok("import threading\nlock = threading.Lock()\ncfg = {'lr': 0.1, 'guard': lock}")
    run = kernel.execute("%%burst\nwith lock:\n    pass\n")
    assert run.evalue.startswith(
        "burst: cannot send 'lock' (threading.Lock): create it inside the cell, or exclude=lock"
    )
    run = kernel.execute("%%burst\nprint(cfg['lr'])\n")
    assert "it holds a threading.Lock at cfg['guard']" in run.evalue
    assert cluster_record(kernel.state_dir) is None
    kernel.ok("%%burst exclude=lock\nimport threading\nlock = threading.Lock()\nok = True\n")
    assert kernel.ok("print(ok, type(lock).__name__)").stdout.strip() == "True lock"
    run = kernel.ok("%%burst\nimport threading\nfresh = threading.Lock()\nalso = 2\n")
    assert (
        "burst: 'fresh' (threading.Lock) stays on the worker, it cannot travel back" in run.stderr
    )
    assert kernel.ok("print('fresh' in dir(), also)").stdout.strip() == "False 2"


def test_a_remote_exception_keeps_its_type_and_points_at_the_cells_own_line(kernel):
    kernel.ok("def scale(v):\n    return v / 0\n")
    run = kernel.execute("%%burst\nx = 1\ny = 2\nz = scale(x)\n")
    assert run.status == "error" and run.ename == "ZeroDivisionError"
    text = run.error_text
    assert "line 4" in text and "z = scale(x)" in text  # line 1 is %%burst itself
    assert "return v / 0" in text  # the notebook function's own frame, from its own cell
    assert "jupyter_burst" not in text and "distributed" not in text
    assert (
        kernel.ok("print('x' in dir())").stdout.strip() == "False"
    )  # a failed cell brings nothing back


def test_functions_classes_lambdas_and_module_aliases_travel(kernel, workdir):
    (workdir / "helpers_mod.py").write_text("def double(v):\n    return 2 * v\n")
    kernel.ok(
        "import numpy as np\nimport helpers_mod as hm\nfrom helpers_mod import double\n"
        "offset = 1\n"
        "def add_offset(v):\n    return v + offset\n"
        "def pipeline(v):\n    return add_offset(double(v))\n"
        "squash = lambda v: v % 7\n"
        "class Counter:\n    def __init__(self):\n        self.n = 0\n    def bump(self):\n        self.n += 1\n"
    )
    run = kernel.ok(
        "%%burst\n"
        "vals = [int(pipeline(i)) for i in np.arange(3)]\n"
        "msg = f'{squash(9)}-{hm.double(5)}'\n"
        "c = Counter()\nc.bump()\n"
        "import helpers_mod\nsame = helpers_mod.double(1)\n"
    )
    check = kernel.ok("print(vals, msg, isinstance(c, Counter), c.n, same)")
    assert check.stdout.strip() == "[1, 3, 5] 2-10 True 1 2", run.stderr


def test_objects_changed_in_place_come_back_and_unchanged_ones_stay_put(kernel):
    kernel.ok(
        "import torch\ntorch.manual_seed(0)\n"
        "model = torch.nn.Linear(3, 1)\nopt = torch.optim.Adam(model.parameters(), lr=0.1)\n"
        "history = []\nuntouched = [1, 2, 3]\nuntouched_id = id(untouched)\nw0 = model.weight.detach().clone()\n"
        "registry = {'net': model}\nmodel_id = id(model)\n"
    )
    kernel.ok(
        "%%burst\n"
        "x = torch.randn(8, 3)\n"
        "for step in range(5):\n"
        "    opt.zero_grad()\n"
        "    loss = model(x).pow(2).mean()\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "    history.append(round(loss.item(), 6))\n"
        "print(len(untouched))\n"
    )
    check = kernel.ok(
        "print(len(history), not torch.equal(model.weight, w0), "
        "opt.param_groups[0]['params'][0] is model.weight, id(untouched) == untouched_id, "
        "id(model) == model_id, registry['net'] is model, all(p in opt.state for p in model.parameters()))"
    )
    # Trained in place means in place here too: the same model object, seen by every reference.
    assert check.stdout.strip() == "5 True True True True True True"


def test_send_exclude_and_return(kernel):
    kernel.ok("secret = 's3cr3t'\nname = 'data'\n")
    run = kernel.ok("%%burst send=name return=out\nout = globals()['name'].upper()\ntemp = 1\n")
    check = kernel.ok("print(out, 'temp' in dir())")
    assert check.stdout.strip() == "DATA False", run.stderr
    run = kernel.execute("%%burst exclude=secret\nprint(secret)\n")
    assert run.ename == "NameError" and "line 2" in run.error_text


def test_deleting_a_name_in_the_cell_deletes_it_in_the_notebook(kernel):
    kernel.ok("scratch = [0] * 10\nkeep = 1")
    kernel.ok("%%burst\ndel scratch\n")
    assert kernel.ok("print('scratch' in dir(), keep)").stdout.strip() == "False 1"


def test_relative_paths_resolve_in_the_notebooks_folder(kernel, workdir):
    (workdir / "data.txt").write_text("hello from the notebook folder")
    kernel.ok("%%burst\ntext = open('data.txt').read()\n")
    assert kernel.ok("print(text)").stdout.strip() == "hello from the notebook folder"


def test_a_market_option_the_local_provider_cannot_honour_is_refused_not_ignored(kernel):
    run = kernel.execute("%%burst spot=yes\nprint('hi')\n")
    assert run.status == "error" and run.evalue.startswith("burst: provider=local")
    assert "spot= would be ignored" in run.evalue and "\n" not in run.evalue
    assert "hi" not in run.stdout


def test_python_api_runs_the_same_path(kernel):
    kernel.ok("import jupyter_burst\nbase = 5\nres = jupyter_burst.run('total = base * 2')")
    assert kernel.ok("print(total, res.assigned)").stdout.strip() == "10 ['total']"


def test_worker_cwd_is_restored_between_cells(kernel, workdir):
    kernel.ok("%%burst\nimport os\nfirst = os.getcwd()\n")
    assert pathlib.Path(kernel.ok("print(first)").stdout.strip()) == workdir
    assert os.path.isdir(workdir)


def test_large_values_travel_out_of_band_and_in_place_changes_come_back(kernel):
    kernel.ok(
        "import numpy as np, torch\nbig = np.ones(2_000_000)\nt = torch.zeros(1_000_000)\nview = t[:10]"
    )
    kernel.ok("%%burst\ntotal = float(big.sum())\nbig[0] = 5\nt += 1\n")
    check = kernel.ok("print(total, big[0], big[1], float(t.sum()), float(view.sum()))")
    assert check.stdout.strip() == "2000000.0 5.0 1.0 1000000.0 10.0"
