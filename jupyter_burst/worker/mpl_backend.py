"""A matplotlib backend for workers: ``plt.show()`` sends the figures back to the notebook.

Selected with ``MPLBACKEND=module://jupyter_burst.worker.mpl_backend`` in the worker's environment;
it draws with Agg, like matplotlib-inline does in a kernel.
"""

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from jupyter_burst.worker.runtime import show_open_figures

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def show(*args, **kwargs) -> None:
    show_open_figures()
