"""The notebooks in notebooks/ run top to bottom (nbclient, a fresh kernel each, cwd = notebooks/)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to run the notebooks (pip install -e .[test])")
nbclient = pytest.importorskip("nbclient", reason="nbclient is needed to run the notebooks (pip install nbclient)")
pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebooks (pip install ipykernel)")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# name -> (module the notebook needs, why it may be missing)
NEEDS = {"layerwise_ilp.ipynb": ("optimizer.layerwise", "solve_layerwise")}
HTML_FROM = {  # notebooks whose results must display as HTML in Jupyter
    "quickstart.ipynb": ("Profile", "CostBreakdown", "SearchResult"),
    "llm_whatif.ipynb": ("Profile", "WhatIfResult", "CostBreakdown"),
}


def _skip_if_missing(name: str) -> None:
    if name not in NEEDS:
        return
    module, attr = NEEDS[name]
    try:
        getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        pytest.skip(f"{module}.{attr} is not importable yet ({type(e).__name__}: {e})")


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs(name, monkeypatch):
    _skip_if_missing(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KINETO_LOG_LEVEL", "6")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    if name in HTML_FROM:
        assert len(html) >= len(HTML_FROM[name]), f"{name}: expected HTML displays of {HTML_FROM[name]}"
