"""Where JupyterLab finds the built frontend of a development checkout.

An installed wheel puts the labextension in ``share/jupyter/labextensions/jupyter-burst``
(hatch shared-data), which JupyterLab finds without this. ``jupyter labextension develop``
and a source checkout use the top-level ``labextension/`` folder that ``jlpm build`` writes.
"""

from __future__ import annotations

from pathlib import Path

LABEXTENSION_NAME = "jupyter-burst"
_BUILT = Path(__file__).resolve().parent.parent / "labextension"


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The built labextension of this checkout, or none where there is no checkout build."""
    if not _BUILT.is_dir():
        return []
    return [{"src": str(_BUILT), "dest": LABEXTENSION_NAME}]
