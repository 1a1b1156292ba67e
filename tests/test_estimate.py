"""Memory estimation: exact parameter, gradient and optimizer bytes; a total close to a measured step."""

from __future__ import annotations

import pytest
import torch

from jupyter_burst.estimate import MemoryEstimate, estimate, measure_step_peak


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(512, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    ), torch.randn(64, 512)


def _transformer():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(128, 4, 512, batch_first=True, dropout=0.0)
    return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), torch.randn(
        16, 64, 128
    )


def _cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    ), torch.randn(16, 3, 32, 32)


MODELS = {"mlp": _mlp, "transformer": _transformer, "cnn": _cnn}
OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01),
    "momentum": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
    "adagrad": lambda p: torch.optim.Adagrad(p),
    "rmsprop": lambda p: torch.optim.RMSprop(p),
}


def _state_bytes(opt) -> int:
    return sum(v.nbytes for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_parameter_gradient_and_optimizer_bytes_are_exact(model_name, optimizer):
    model, batch = MODELS[model_name]()
    found = estimate(model, optimizer=optimizer)
    opt = OPTIMIZERS[optimizer](model.parameters())
    model(batch).float().mean().backward()
    opt.step()
    assert found.param_bytes == sum(p.nbytes for p in model.parameters())
    assert found.grad_bytes == sum(p.grad.nbytes for p in model.parameters())
    assert found.optimizer_bytes == _state_bytes(opt)
    assert found.buffer_bytes == sum(b.nbytes for b in model.buffers())


@pytest.mark.parametrize("model_name", MODELS)
def test_total_is_within_15_percent_of_a_measured_training_step(model_name):
    model, batch = MODELS[model_name]()
    found = estimate(model, optimizer="adam", batch=batch)
    measured = measure_step_peak(model, batch, optimizer="adam")
    assert abs(found.total - measured) <= 0.15 * measured, (found.total, measured)
    assert found.activation_bytes > 0


def test_a_model_on_the_meta_device_is_estimated_without_allocating():
    with torch.device("meta"):
        model = torch.nn.Sequential(
            torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096)
        )
        batch = torch.randn(8, 4096)
    found = estimate(model, optimizer="adam", batch=batch)
    assert found.param_bytes == 2 * (4096 * 4096 + 4096) * 4
    assert found.measured_on == "meta device" and found.activation_bytes >= 8 * 4096 * 4 * 2


def _synthetic(param_gib: float) -> MemoryEstimate:
    n = int(param_gib * (1 << 30))
    return MemoryEstimate(
        parameters=n // 4, trainable=n // 4, param_bytes=n, buffer_bytes=0, grad_bytes=n,
        optimizer_bytes=2 * n, activation_bytes=1 << 30, step_bytes=1 << 30,
        largest_layer_bytes=n // 40, optimizer="adam", precision="fp32", measured_on="cpu",
    )  # fmt: skip


def test_recommendation_prefers_one_gpu_then_shards_what_does_not_fit():
    assert _synthetic(1).recommend() == (1, 16, "ddp")  # 5 GiB in all fits one 16 GiB GPU
    assert _synthetic(10).recommend() == (1, 48, "ddp")  # 41 GiB: one 48 GiB GPU
    gpus, size, strategy = _synthetic(60).recommend()  # 241 GiB: no single GPU holds it
    assert strategy == "fsdp" and gpus > 1
    big = _synthetic(60)
    assert big.per_gpu(8, "fsdp") < big.per_gpu(4, "fsdp") < big.per_gpu(1, "ddp")
    assert big.per_gpu(2, "ddp") == big.total + big.grad_bytes  # DDP's gradient buckets


def test_estimate_magic_prints_the_table_and_gpus_auto_uses_it(kernel):
    kernel.ok("import torch\nnet = torch.nn.Linear(256, 256)\nx = torch.randn(32, 256)")
    shown = kernel.ok("%burst estimate net optimizer=adam batch=x")
    out = shown.stdout
    assert "parameters      65,792" in out and "DDP per GPU" in out and "recommended: gpus=1" in out
    # torch's profiler logs each start and stop natively ("USDT:... profiler_start"): none of
    # it reaches the user's cell.
    assert shown.stderr == ""
    run = kernel.execute("%burst estimate net optimizer=lion")
    assert run.evalue.startswith("burst: unknown optimizer 'lion'")
    run = kernel.ok("%%burst gpus=auto\nout = net(x).shape[0]\n")
    assert "burst: gpus=auto chose gpus=1" in run.stdout
    assert kernel.ok("print(out)").stdout.strip() == "32"


def test_sharding_is_chosen_when_one_replica_does_not_fit_the_gpu():
    from jupyter_burst.estimate import needs_sharding

    model = torch.nn.Linear(1024, 1024)  # 4 MiB of weights: with gradients and Adam, 16 MiB
    assert not needs_sharding(model, gpu_bytes=64 << 20)
    assert needs_sharding(model, gpu_bytes=8 << 20)
