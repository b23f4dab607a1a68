"""The real ORL faces from ../shared/data, in the report's format; skipped where that folder is absent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cnnclf.data import ORLDataModule
from tests.conftest import SHARED_DATA
from tests.test_cli import CONFIGS, run

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (SHARED_DATA / "orl.npz").is_file(), reason="../shared/data is not here"),
]


@pytest.fixture(scope="module")
def real_orl(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("real")
    subprocess.run([sys.executable, str(SHARED_DATA / "make_seed_pickles.py"), str(folder), "--only", "ORL"],
                   check=True, capture_output=True)
    return folder / "ORL"


def test_real_orl_loads_as_the_report_describes(real_orl):
    data = ORLDataModule(str(real_orl), val_split=0, resize=[92, 92])
    assert len(data.data.train[1]) == 360 and len(data.data.test[1]) == 40
    assert data.image_shape == [3, 92, 92]
    assert sorted(set(data.data.test[1].tolist())) == list(range(40))


def test_report_orl_config_trains_an_epoch_and_reports_1_to_40(real_orl, tmp_path):
    cli = run("fit", CONFIGS / "orl.yaml", tmp_path, "--data.path", str(real_orl), "--trainer.max_epochs", "1",
              "--test_after_fit", "true")
    summary = json.loads((Path(cli.trainer.log_dir) / "test/summary.json").read_text())
    assert summary["images"] == 40
    assert summary["class_names"][0] == "1" and summary["class_names"][-1] == "40"
