"""Every notebook runs top to bottom, headless, on a checkpoint trained here."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.test_cli import CONFIGS, run

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# A line each notebook prints only when its analysis ran to the end on real results.
EXPECTED_OUTPUT = {"01_explore_checkpoint": "macro avg", "02_compare_sweep": "best run: optimizer="}


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    fitted = run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    return Path(fitted.trainer.checkpoint_callback.best_model_path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_without_error(path, digits_checkpoint, digits_sweep, monkeypatch):
    monkeypatch.setenv("CNNCLF_CHECKPOINT", str(digits_checkpoint))
    monkeypatch.setenv("CNNCLF_SWEEP", str(digits_sweep))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{path.name}: commit notebooks with outputs stripped"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parents[1])}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert EXPECTED_OUTPUT[path.stem] in printed
