"""The report's architectures layer for layer, and the shared classifier behaviour."""

import pytest
import torch

from cnnclf.errors import ConfigError
from cnnclf.models import ReportCIFARNet, ReportMNISTNet, ReportORLNet


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("architecture", "image_shape", "classes", "expected"), [
    (ReportMNISTNet, [1, 28, 28], 10, 542_230),
    (ReportORLNet, [3, 92, 92], 40, 42_130_782),
    (ReportCIFARNet, [3, 32, 32], 10, 154_454),
])
def test_report_parameter_counts(architecture, image_shape, classes, expected):
    model = architecture(classes, image_shape)
    assert parameter_count(model) == expected
    assert model(torch.zeros(2, *image_shape, dtype=torch.uint8)).shape == (2, classes)


def test_flatten_width_follows_the_input():
    assert ReportMNISTNet(10, [1, 8, 8]).net[2][0].in_features == 32 * 3 * 3
    assert ReportCIFARNet(10, [3, 8, 8]).net[2][1].in_features == 64


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="ReportORLNet cannot take 8x8 images"):
        ReportORLNet(10, [1, 8, 8])


def test_final_relu_clips_logits_only_when_asked():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 28, 28) * 255
    faithful = ReportMNISTNet(10, [1, 28, 28], final_relu=True)
    assert (faithful(images) >= 0).all()
    fixed = ReportMNISTNet(10, [1, 28, 28])
    fixed.load_state_dict(faithful.state_dict())
    assert (fixed(images) < 0).any()


def test_normalization_uses_the_data_statistics():
    model = ReportMNISTNet(10, [1, 8, 8], input_mean=[100.0], input_std=[50.0])
    plain = ReportMNISTNet(10, [1, 8, 8])
    plain.load_state_dict(model.state_dict())
    images = torch.full((1, 1, 8, 8), 150.0)
    assert torch.allclose(model(images), plain(torch.ones(1, 1, 8, 8)))


def test_hyperparameters_are_plain_values():
    model = ReportCIFARNet(10, [3, 32, 32], class_names=["a"] * 10, input_mean=[1.0] * 3, input_std=[2.0] * 3)
    for value in model.hparams.values():
        assert isinstance(value, (int, float, str, bool, list, type(None)))


@pytest.mark.parametrize("bad", [dict(num_classes=1), dict(image_shape=[28, 28]), dict(lr=0.0)])
def test_bad_model_arguments(bad):
    arguments = dict(num_classes=10, image_shape=[1, 28, 28]) | bad
    with pytest.raises(ConfigError):
        ReportMNISTNet(**arguments)
