"""The chart under a cell of what its ranks ``burst.log``: a curve per metric and rank over
steps, redrawn while the job runs and once more when it ends.

One display, updated in place, carries three forms of the same points: JupyterLab with this
extension draws ``application/vnd.jupyter-burst.metrics+json`` itself; any other frontend
shows the PNG drawn here (matplotlib, when the kernel has it); a terminal the last values.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Callable
from typing import Any

MIME_TYPE = "application/vnd.jupyter-burst.metrics+json"
REDRAW_SECONDS = 2.0  # a chart is for trends: every two seconds is live enough
MOST_METRICS_DRAWN = 4  # panels in the PNG; the JSON keeps every metric

Points = dict[str, dict[int, list[tuple[float, float]]]]  # name -> rank -> [(step, value)]


class MetricsChart:
    """Collects the metrics events of one job's ranks and keeps its display up to date.

    ``show(data, metadata, display_id, update)`` is for tests; by default IPython's display.
    """

    def __init__(
        self,
        job_id: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        show: Callable[[dict, dict, str, bool], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.points: Points = {}
        self._clock = clock
        self._show = show or _show
        self._display_id = f"burst-metrics-{uuid.uuid4().hex}"
        self._shown = False  # the display exists: later draws update it
        self._changed = False
        self._drawn_at = -float("inf")
        self._broken = False  # a chart that failed once stays off: the job comes first

    def add(self, rank: int, step: Any, values: dict) -> None:
        for name, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            curve = self.points.setdefault(str(name), {}).setdefault(int(rank), [])
            x = float(step) if isinstance(step, (int, float)) else float(len(curve))
            curve.append((x, float(value)))
            self._changed = True

    def tick(self, final: bool = False) -> None:
        """Redraw if something changed and the last draw is old enough (or it is the end)."""
        if self._broken or not self._changed:
            return
        if not final and self._clock() - self._drawn_at < REDRAW_SECONDS:
            return
        try:
            self._show(self.bundle(), {}, self._display_id, self._shown)
        except Exception:  # never let a chart stop the cell's output
            self._broken = True
            return
        self._shown, self._changed, self._drawn_at = True, False, self._clock()

    def bundle(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            MIME_TYPE: {
                "job": self.job_id,
                "metrics": {
                    name: {str(rank): [list(p) for p in curve] for rank, curve in ranks.items()}
                    for name, ranks in self.points.items()
                },
            },
            "text/plain": self.summary(),
        }
        png = self.png()
        if png is not None:
            data["image/png"] = png
        return data

    def summary(self) -> str:
        """The last value of each metric and rank: ``loss  rank 0: 0.1234 (step 50) ...``."""
        lines = []
        for name, ranks in self.points.items():
            last = [
                f"rank {rank}: {curve[-1][1]:.4g} (step {curve[-1][0]:g})"
                for rank, curve in sorted(ranks.items())
                if curve
            ]
            lines.append(f"{name}  " + "  ".join(last))
        return "\n".join(lines)

    def png(self) -> str | None:
        """The curves as a PNG (base64), or None where the kernel has no matplotlib."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            return None
        names = list(self.points)[:MOST_METRICS_DRAWN]
        # The Figure API, not pyplot: nothing of the user's own figures or backend is touched.
        figure = Figure(figsize=(3.2 * len(names), 2.4), dpi=80, layout="constrained")
        FigureCanvasAgg(figure)
        for i, name in enumerate(names):
            axes = figure.add_subplot(1, len(names), i + 1)
            for rank, curve in sorted(self.points[name].items()):
                axes.plot([p[0] for p in curve], [p[1] for p in curve], label=f"rank {rank}")
            axes.set_title(name, fontsize=9)
            axes.set_xlabel("step", fontsize=8)
            axes.tick_params(labelsize=7)
            if len(self.points[name]) > 1:
                axes.legend(fontsize=7)
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return base64.b64encode(out.getvalue()).decode()


def _show(data: dict, metadata: dict, display_id: str, update: bool) -> None:
    from IPython import get_ipython
    from IPython.display import display

    if get_ipython() is None:  # no notebook to draw in (burst.run from a script)
        return
    display(data, metadata=metadata, raw=True, display_id=display_id, update=update)
