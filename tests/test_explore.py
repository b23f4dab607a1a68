"""Opening checkpoints: weights only, cnnclf classes only, clear errors for bad files."""

import os

import pytest
import torch

from cnnclf.errors import ConfigError
from cnnclf.explore import load_model
from cnnclf.models import ReportMNISTNet


def _checkpoint(path, class_path="cnnclf.models.ReportMNISTNet"):
    model = ReportMNISTNet(10, [1, 8, 8])
    hparams = dict(model.hparams) | {"_class_path": class_path}
    torch.save({"hyper_parameters": hparams, "state_dict": model.state_dict()}, path)
    return model


def test_round_trip(tmp_path):
    model = _checkpoint(tmp_path / "ok.ckpt")
    loaded = load_model(tmp_path / "ok.ckpt")
    images = torch.rand(2, 1, 8, 8) * 255
    assert torch.equal(loaded(images), model.eval()(images))


@pytest.mark.parametrize("class_path", ["os.system", "collections.OrderedDict", "cnnclf.data.MNISTDataModule"])
def test_foreign_class_is_refused(tmp_path, class_path):
    _checkpoint(tmp_path / "foreign.ckpt", class_path)
    with pytest.raises(ConfigError, match=f"refusing class '{class_path}'"):
        load_model(tmp_path / "foreign.ckpt")


class _Payload:
    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


def test_malicious_checkpoint_does_not_run(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(sentinel)}}, path, pickle_protocol=2)
    with pytest.raises(ConfigError, match="not a loadable checkpoint"):
        load_model(path)
    assert not sentinel.exists()


def test_truncated_checkpoint(tmp_path):
    _checkpoint(tmp_path / "ok.ckpt")
    data = (tmp_path / "ok.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="cut.ckpt: not a loadable checkpoint"):
        load_model(tmp_path / "cut.ckpt")
