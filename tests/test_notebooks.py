"""Every notebook runs top to bottom in a Jupyter kernel started in notebooks/, as `make notebook` starts it,
on a checkpoint trained here, and shows its figures."""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.test_cli import CONFIGS, run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# A line each notebook prints only when its analysis ran to the end on real results.
EXPECTED_OUTPUT = {"01_explore_checkpoint": "macro avg", "02_compare_sweep": "chosen on validation accuracy"}
# 01: sample predictions, confusion matrix, highest-loss images, filters; 02: results chart, curves, confusion matrix.
EXPECTED_FIGURES = {"01_explore_checkpoint": 4, "02_compare_sweep": 3}


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    fitted = run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    return Path(fitted.trainer.checkpoint_callback.best_model_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_from_its_folder_and_shows_its_figures(path, digits_checkpoint, digits_sweep, monkeypatch):
    monkeypatch.setenv("CNNCLF_CHECKPOINT", str(digits_checkpoint))
    monkeypatch.setenv("CNNCLF_SWEEP", str(digits_sweep))
    # The kernel must pick its own (inline) backend, as in JupyterLab, and import this checkout's cnnclf.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name}: commit notebooks with outputs stripped"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    printed = "".join(output.get("text", "") for output in outputs)
    assert EXPECTED_OUTPUT[path.stem] in printed
    figures = [output for output in outputs
               if output.output_type == "display_data" and "image/png" in output.get("data", {})]
    assert len(figures) == EXPECTED_FIGURES[path.stem]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_a_notebook_copied_outside_the_repository_opens_the_path_it_is_given(path, tmp_path, monkeypatch):
    given = tmp_path / "given"
    given.write_bytes(b"")
    monkeypatch.setenv("CNNCLF_CHECKPOINT", str(given))
    monkeypatch.setenv("CNNCLF_SWEEP", str(given))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(nbformat.read(path, as_version=4).cells[1].source, namespace)  # the cell that picks what to open
    assert given in (namespace.get("CHECKPOINT"), namespace.get("SWEEP"))
