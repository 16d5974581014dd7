"""The notebooks' code cells run as they are (so the examples cannot rot)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(path):
    cells = json.loads(path.read_text())["cells"]
    namespace = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    OUTCOMES[path.stem](namespace)


def _quickstart(ns):
    """The notebook's promise: 27 forward passes for Q = 12, the prompt returned unchanged."""
    assert len(ns["passes"]) == 27 and ns["generated"].shape[1] == 12
    assert bool((ns["generated"][:, :, :150] == ns["prompt"]).all())


def _dialogue(ns):
    """Three turns spoken in order, and the saved wav/json/png on disk."""
    assert [t["speaker"] for t in ns["result"].turns] == ["A", "B", "A"]
    assert all(Path(p).is_file() for p in ns["paths"].values()) and set(ns["paths"]) == {"wav", "json", "png"}


OUTCOMES = {"quickstart": _quickstart, "dialogue": _dialogue}


def test_every_notebook_has_its_outcome_checked():
    assert NOTEBOOKS and {p.stem for p in NOTEBOOKS} == set(OUTCOMES)
