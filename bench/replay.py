"""A fixed 20-cell notebook session, as an iterative data-science notebook would run it.

The notebook makes a float32 dataset locally once (``notebook_namespace``), then runs the 20
cells of ``CELLS`` remotely: statistics, a small torch model fitted on the CPU for a few
steps, evaluated, a hyperparameter tweaked and the model fitted again; several cells read the
big ``data`` again unchanged, one changes one element of it, and what comes back is small
(except that changed ``data``). The cells are plain Python; each system adds its own magic.

``names_out`` and ``names_in`` say which names a push/pull workflow moves, from the same
analysis jupyter-burst uses, so that every system moves the same names.
"""

from __future__ import annotations

import ast
import functools

import numpy as np

FEATURES = 64
HELD_OUT_ROWS = 1 << 14
BATCH_ROWS = 2048

# torch.tensor, not torch.from_numpy: an array pushed to an ipyparallel engine arrives
# read-only (its buffer is the received message), which torch.from_numpy warns about.
_FIT = """\
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Linear(n_features, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
)
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
center, spread = torch.tensor(mean), torch.tensor(scale)
for step in range(steps):
    rows = slice(step * batch, (step + 1) * batch)
    inputs = (torch.tensor(data[rows]) - center) * spread
    prediction = model(inputs).squeeze(1)
    loss = torch.nn.functional.mse_loss(prediction, torch.tensor(target[rows]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
train_loss = loss.item()
del loss, prediction
"""

_EVALUATE = """\
import torch
held_out = slice(n_rows - held_out_rows, n_rows)
with torch.no_grad():
    inputs = (torch.tensor(data[held_out]) - center) * spread
    prediction = model(inputs).squeeze(1)
    val_loss = torch.nn.functional.mse_loss(prediction, torch.tensor(target[held_out])).item()
del inputs, prediction
"""

CELLS: tuple[str, ...] = (
    # 1. a first look
    "n_rows, n_features = data.shape\nfirst_rows = data[:5].copy()\n",
    # 2. column statistics: reads all of data (the computations in these cells are kept
    # light, without temporaries the size of data: the replay is about moving cells)
    "mean = data.mean(axis=0)\nstd = data[::16].std(axis=0)\n",
    # 3. rows with a missing value: all of data again, unchanged
    "import numpy as np\nmissing = int(np.isnan(data.sum(axis=1)).sum())\n",
    # 4. normalisation factors (small)
    "scale = (1.0 / (std + 1e-6)).astype('float32')\n",
    # 5. the target
    "target_mean = float(target.mean())\ntarget_std = float(target.std())\n",
    # 6. one feature's distribution: data again
    "import numpy as np\nhist, edges = np.histogram(data[:, 0], bins=50)\n",
    # 7. correlations of the first features: data again
    "import numpy as np\ncorr = np.corrcoef(data[::16, :8].T)\n",
    # 8. hyperparameters
    f"lr = 0.05\nsteps = 30\nbatch = {BATCH_ROWS}\nheld_out_rows = {HELD_OUT_ROWS}\n",
    # 9-10. fit, evaluate
    _FIT,
    _EVALUATE,
    # 11-13. tweak the learning rate, fit again, evaluate
    "lr = 0.2\n",
    _FIT,
    _EVALUATE,
    # 14. outliers in the first feature: data again
    "import numpy as np\noutliers = int((np.abs(data[:, 0] - mean[0]) > 4 * std[0]).sum())\n",
    # 15. fix one element: data comes back changed
    "data[0, 0] = 0.0\n",
    # 16. statistics again, on the changed data
    "mean = data.mean(axis=0)\n",
    # 17-19. more steps, fit again, evaluate
    "steps = 60\n",
    _FIT,
    _EVALUATE,
    # 20. a summary to keep
    "summary = {'rows': n_rows, 'missing': missing, 'outliers': outliers,\n"
    "           'train_loss': train_loss, 'val_loss': val_loss, 'lr': lr}\n",
)

# The warm-up every system runs first (not timed): the remote side imports what the cells
# use, and takes one optimizer step (torch imports more on the first one, for seconds).
# One torch thread: on a small machine shared with other processes, torch's OpenMP threads
# spin against each other and a fit of a few milliseconds takes seconds; the replay is
# about moving cells and values, not that.
WARM_UP = """\
import numpy, torch
torch.set_num_threads(1)
warm_up = torch.nn.Linear(2, 1)
warm_up(torch.ones(1, 2)).sum().backward()
torch.optim.SGD(warm_up.parameters(), lr=0.1).step()
del warm_up
"""


def notebook_namespace(nbytes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The dataset the notebook makes locally before the session: ``data`` of about ``nbytes``
    (float32, FEATURES columns) and a ``target`` that is a noisy linear function of it."""
    rng = np.random.default_rng(seed)
    rows = nbytes // (FEATURES * 4)
    data = rng.standard_normal((rows, FEATURES), dtype=np.float32)
    weights = rng.standard_normal(FEATURES, dtype=np.float32) / np.float32(FEATURES**0.5)
    target = data @ weights + 0.1 * rng.standard_normal(rows, dtype=np.float32)
    return {"data": data, "target": target.astype(np.float32)}


@functools.cache
def _analysis(source: str):
    """jupyter-burst's own reading of the cell, once per source (the replay repeats cells,
    and a push/pull cell asks three questions of it)."""
    from jupyter_burst.kernel.namespace import analyse

    return analyse(source)


def names_in(source: str, namespace: dict) -> list[str]:
    """The notebook names the cell reads: what a push sends."""
    return sorted(name for name in _analysis(source).reads if name in namespace)


def names_out(source: str) -> list[str]:
    """What a pull brings back: the names the cell binds (modules aside, they cannot be
    pickled; deleted ones aside), and names the cell stores into (``data[0, 0] = ...``),
    since jupyter-burst brings back a value changed in place too."""
    analysis = _analysis(source)
    bound = analysis.assigns - analysis.imports - analysis.deletes
    return sorted(bound | _stored_into(source))


def names_deleted(source: str) -> frozenset[str]:
    """The names ``del`` removes: gone from the notebook afterwards, as with ``%%burst``."""
    return _analysis(source).deletes


def _stored_into(source: str) -> set[str]:
    """Top-level names whose item or attribute the cell assigns (``x[i] = v``, ``x.a = v``)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
    return names
