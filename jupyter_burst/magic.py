"""``%%burst`` and ``%burst``: parse, delegate to :mod:`jupyter_burst.cell`, print one line on a user error."""

from __future__ import annotations

import difflib
import shlex
import time

from IPython.core.magic import Magics, line_cell_magic, magics_class

from jupyter_burst import clusters, config, options
from jupyter_burst.cell import run_cell
from jupyter_burst.errors import NotYetAvailable, OptionError

_VERBS = {"status": "status", "down": "down", "estimate": "estimate"}
_LATER_VERBS = {
    "jobs": 4,
    "logs": 4,
    "wait": 4,
    "cancel": 4,
    "attach": 4,
    "checkpoints": 4,
    "restore": 4,
    "offers": 5,
    "gc": 5,
    "cost": 5,
    "cache": 8,
}


@magics_class
class BurstMagics(Magics):
    @line_cell_magic
    def burst(self, line: str, cell: str | None = None):
        """%%burst [gpus=1] [provider=local] [cluster=NAME] [idle=MIN] [timeout=MIN] [send=a,b] [exclude=a,b] [return=a,b]

        Run this cell on a Dask cluster; its output streams back and its results land here.
        %burst status  -- the clusters and their state
        %burst down [NAME]  -- stop a cluster (all, without a name)
        """
        __tracebackhide__ = True
        config.refresh()
        if cell is None:
            return self._verb(line)
        parsed = options.parse(line)
        shell = self.shell
        if parsed.gpus_auto:
            parsed = choose_gpus(parsed, shell.user_ns, cell)
        raw = f"%%burst {line}\n{cell}" if line else f"%%burst\n{cell}"
        filename = shell.compile.cache(raw, number=shell.execution_count)
        kernel = getattr(getattr(shell, "kernel", None), "ident", "") or ""
        try:
            run_cell(cell, parsed, shell.user_ns, filename=filename, line_offset=1, kernel=kernel)
        except Exception as exc:
            remote = getattr(exc, "__burst_traceback__", None)
            if remote is not None:
                exc._render_traceback_ = _remote_renderer(shell, exc, remote)
                raise exc.with_traceback(remote) from None
            raise

    def _verb(self, line: str):
        words = shlex.split(line)
        if not words:
            raise OptionError(
                "say what to do: %burst status, or %burst down [NAME]; %%burst on a cell runs it"
            )
        verb, args = words[0], words[1:]
        if verb in _LATER_VERBS:
            raise NotYetAvailable(f"%burst {verb} arrives with issue #{_LATER_VERBS[verb]}")
        if verb not in _VERBS:
            close = difflib.get_close_matches(verb, list(_VERBS) + list(_LATER_VERBS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OptionError(f"unknown command '%burst {verb}'{hint}; known: {', '.join(_VERBS)}")
        return getattr(self, f"_{_VERBS[verb]}")(args)

    def _estimate(self, args: list[str]) -> None:
        """%burst estimate EXPR [optimizer=adam] [batch=EXPR] [precision=fp32]"""
        from jupyter_burst.estimate import estimate

        if not args or "=" in args[0]:
            raise OptionError(
                "say which model: %burst estimate MODEL [optimizer=adam] [batch=EXPR] [precision=fp32]"
            )
        settings: dict[str, str] = {}
        for word in args[1:]:
            key, sep, value = word.partition("=")
            if not sep or key not in ("optimizer", "batch", "precision") or key in settings:
                raise OptionError(
                    f"'{word}' is not an estimate option; use optimizer=NAME, batch=EXPR, precision=fp32|bf16|fp16"
                )
            settings[key] = value
        # The model and the batch are the user's own expressions, evaluated like %timeit's.
        model = self.shell.ev(args[0])
        batch = self.shell.ev(settings["batch"]) if "batch" in settings else None
        result = estimate(
            model,
            optimizer=settings.get("optimizer", "adam"),
            batch=batch,
            precision=settings.get("precision", "fp32"),
        )
        _estimates[id(model)] = result
        print(result.table())

    def _status(self, args: list[str]) -> None:
        if args:
            raise OptionError("%burst status takes no arguments")
        print(format_status(clusters.status()))

    def _down(self, args: list[str]) -> None:
        if len(args) > 1:
            raise OptionError("%burst down takes at most one cluster name")
        stopped = clusters.down(args[0] if args else None)
        print(
            f"burst: stopped {', '.join(stopped)}" if stopped else "burst: no cluster was running"
        )


_estimates: dict[int, object] = {}


def choose_gpus(parsed, user_ns, cell: str):
    """gpus=auto: as many GPUs as the memory estimate of the cell's largest model asks for."""
    import dataclasses
    import sys

    from jupyter_burst import namespace
    from jupyter_burst.estimate import estimate

    torch = sys.modules.get("torch")
    reads = namespace.analyse(cell).reads
    models = [
        user_ns[name]
        for name in sorted(reads)
        if name in user_ns and torch is not None and isinstance(user_ns[name], torch.nn.Module)
    ]
    if not models:
        raise OptionError(
            "gpus=auto needs a torch model among the cell's variables to estimate; give gpus=N instead"
        )
    model = max(models, key=lambda m: sum(p.numel() for p in m.parameters()))
    found = _estimates.get(id(model)) or estimate(model)
    gpus, size, strategy = found.recommend()
    print(
        f"burst: gpus=auto chose gpus={gpus} ({strategy.upper()}, GPUs of >= {size} GiB; "
        f"one-GPU total {found.total / (1 << 30):.2f} GiB)"
    )
    return dataclasses.replace(parsed, gpus=gpus, gpus_auto=False)


def _remote_renderer(shell, exc: BaseException, tb):
    def render() -> list[str]:
        return shell.InteractiveTB.structured_traceback(type(exc), exc, tb, tb_offset=0)

    return render


def format_status(entries: list[dict]) -> str:
    """``%burst status`` as a small table; GPUs shown as 'cpu' where the slot is a CPU."""
    if not entries:
        return "burst: no clusters (a %%burst cell starts one)"
    rows = [("cluster", "provider", "state", "slots", "idle after", "address", "up")]
    now = time.time()
    for e in entries:
        if not e.get("alive"):
            state = "gone"
        elif "error" in e:
            state = "not answering"
        else:
            state = (
                "running"
                if e.get("busy")
                else f"idle, stops in {e.get('idle_remaining', 0) / 60:.1f} min"
            )
        devices = e.get("devices") or []
        slots = ", ".join(f"{d}" for d in devices) if devices else str(e.get("slots", "?"))
        rows.append(
            (
                e["name"],
                e.get("provider", "?"),
                state,
                slots,
                f"{e.get('idle', 0):g} min",
                e.get("scheduler", ""),
                f"{(now - e.get('started', now)) / 60:.1f} min",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def load(shell) -> None:
    from jupyter_burst import helper

    shell.register_magics(BurstMagics)
    # The same cell also runs without %%burst: then `burst` is this one process, rank 0 of 1.
    shell.user_ns.setdefault("burst", helper.local())
