"""Memory estimation against an anchor users know: ``accelerate estimate-memory``'s arithmetic.

accelerate counts the weights (``calculate_maximum_sizes``) and, for training with Adam in
fp32, gradients = weights, optimizer = 2 x weights, and a step peak of 4 x weights; it never
looks at activations. jupyter-burst counts the same parts exactly and measures activations
with a forward/backward on a sample batch. Both are set against the measured peak of a real
training step (torch profiler, CPU). accelerate's hub loading is not used (no network here):
its own functions run on the same models.
"""

from __future__ import annotations

from bench.common import Report, Row


def _models():
    import torch

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
        torch.nn.Linear(4096, 10),
    )  # fmt: skip
    layer = torch.nn.TransformerEncoderLayer(256, 8, 1024, batch_first=True, dropout=0.0)
    transformer = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )  # fmt: skip
    return {
        "MLP (21 M params), batch 64": (mlp, torch.randn(64, 1024)),
        "transformer (4 layers, d=256), batch 16x128": (transformer, torch.randn(16, 128, 256)),
        "CNN (2 conv + BN), batch 32x3x64x64": (cnn, torch.randn(32, 3, 64, 64)),
    }


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def run(session, quick: bool, profile: bool = False) -> Report:
    from jupyter_burst.estimate import estimate, measure_step_peak

    try:
        from accelerate.commands.estimate import estimate_training_usage
        from accelerate.utils import calculate_maximum_sizes
    except ImportError:
        accelerate = None
    else:
        accelerate = (calculate_maximum_sizes, estimate_training_usage)

    report = Report()
    m = "memory estimate"
    for name, (model, batch) in _models().items():
        ours = estimate(model, optimizer="adam", batch=batch)
        measured = measure_step_peak(model, batch, optimizer="adam")
        error = (ours.total - measured) / measured
        report.rows.append(
            Row(
                m,
                f"{name}: jupyter-burst total / measured peak",
                f"{_mib(ours.total)} / {_mib(measured)} ({error:+.1%})",
                "within 15%",
                abs(error) <= 0.15,
            )
        )
        if accelerate is not None:
            size, _largest = accelerate[0](model)
            theirs = accelerate[1](size, "float32")
            their_peak = max(
                theirs["step"], theirs["model"] + theirs["gradients"] + theirs["optimizer"]
            )
            report.rows.append(
                Row(
                    m,
                    f"{name}: accelerate estimate-memory (Adam, fp32) weights+grads+optimizer / step",
                    f"{_mib(theirs['model'] + theirs['gradients'] + theirs['optimizer'])} / "
                    f"{_mib(theirs['step'])} ({(their_peak - measured) / measured:+.1%} vs measured)",
                )
            )
        report.rows.append(
            Row(
                m,
                f"{name}: weights / gradients / Adam state / activations (ours)",
                f"{_mib(ours.param_bytes)} / {_mib(ours.grad_bytes)} / {_mib(ours.optimizer_bytes)} / "
                f"{_mib(ours.activation_bytes)}",
            )
        )
    if accelerate is None:
        report.notes.append(
            "accelerate is not installed (pip install accelerate): its rows are missing"
        )
    report.notes.append(
        "GPU anchor (torch.cuda.max_memory_allocated): not measured; this task had no GPU lent."
    )
    return report
