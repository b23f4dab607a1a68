"""The report's architectures layer for layer, and the shared classifier behaviour."""

import lightning as L
import pytest
import torch
from sklearn.metrics import f1_score

from cnnclf.callbacks import NetworkSummary
from cnnclf.errors import ConfigError
from cnnclf.explore import read_curve
from cnnclf.models import AirbenchNet, ConvBNNet, ReportCIFARNet, ReportMNISTNet, ReportORLNet, ResNet9
from cnnclf.models.airbench import identity_conv
from cnnclf.models.optimization import parameter_groups, triangle
from tests.conftest import CONFIGS
from tests.test_cli import run


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


@pytest.mark.parametrize(("architecture", "image_shape"), [
    (ReportMNISTNet, [1, 28, 28]), (ReportORLNet, [3, 92, 92]), (ReportCIFARNet, [3, 32, 32]),
])
def test_report_features_pooled_before_relu_match_the_report_order(architecture, image_shape):
    # The report's tables put each ReLU before its max-pool; the classes pool first, which must
    # change neither the values nor the gradients that training sees.
    torch.manual_seed(0)
    features = architecture(10, image_shape).net[0]
    convolutions = [layer for layer in features if isinstance(layer, torch.nn.Conv2d)]
    report_order = torch.nn.Sequential(
        *[layer for conv in convolutions for layer in (conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2))])
    images = torch.randn(3, *image_shape)
    ours, theirs = features(images), report_order(images)
    assert torch.equal(ours, theirs)
    ours_grad = torch.autograd.grad(ours.square().sum(), convolutions[0].weight)[0]
    theirs_grad = torch.autograd.grad(theirs.square().sum(), convolutions[0].weight)[0]
    assert torch.equal(ours_grad, theirs_grad)


def test_the_layer_table_lists_the_network_alone_with_each_layers_output_shape():
    table = NetworkSummary(ReportMNISTNet(10, [1, 28, 28]), max_depth=2)  # not its loss or metrics
    assert dict(zip(table.layer_names, table.out_sizes, strict=True)) == {
        "net": [1, 10], "net.0": [1, 32, 13, 13], "net.1": [1, 5408], "net.2": [1, 10]}
    assert table.total_parameters == 542_230


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


@pytest.mark.parametrize(("architecture", "options", "image_shape"), [
    (ConvBNNet, {"widths": [8, 16]}, [1, 28, 28]),
    (ConvBNNet, {"widths": [4, 8, 16, 32]}, [1, 112, 92]),
    (ResNet9, {"width": 8}, [3, 32, 32]),
    (ResNet9, {"width": 4}, [1, 8, 8]),
    (AirbenchNet, {"widths": [8, 16, 16]}, [3, 32, 32]),
    (AirbenchNet, {"widths": [4, 8, 8]}, [1, 28, 28]),
])
def test_stronger_architectures_take_any_input(architecture, options, image_shape):
    model = architecture(7, image_shape, **options)
    assert model(torch.zeros(3, *image_shape)).shape == (3, 7)
    assert all(name in model.hparams for name in options)


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32) * 255
    plain = ResNet9(10, [3, 32, 32], width=8).eval()
    fast = ResNet9(10, [3, 32, 32], width=8, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    assert fast.net[0][0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(plain(images), fast(images), atol=1e-4)


def test_mirrored_test_time_averaging():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 255
    model = ReportCIFARNet(10, [3, 32, 32], tta_hflip=True).eval()
    expected = (model(images) + model(images.flip(3))) / 2
    assert torch.allclose(model.evaluation_logits(images), expected)
    model.hparams.tta_hflip = False
    assert torch.allclose(model.evaluation_logits(images), model(images))


def test_translated_test_time_averaging_shifts_the_views_both_ways():
    torch.manual_seed(0)
    model = ReportCIFARNet(10, [3, 12, 20], tta_hflip=True, tta_translate=1).eval()
    # Mirrored edges fill a shifted constant image with the same constant: every view is alike.
    flat = torch.full((2, 3, 12, 20), 77, dtype=torch.uint8)
    assert torch.allclose(model.evaluation_logits(flat), model._mirror_averaged(flat), atol=1e-6)
    images = torch.rand(2, 3, 12, 20) * 255
    averaged = model.evaluation_logits(images)
    assert averaged.shape == (2, 10)
    assert not torch.allclose(averaged, model._mirror_averaged(images))


def test_airbench_whitening_decorrelates_the_patches_it_was_computed_from():
    torch.manual_seed(0)
    mixing = torch.tensor([[1.0, 0.8, 0.2], [0.0, 1.0, 0.5], [0.3, 0.0, 1.0]])
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.rand(100, 3, 32, 32) * 80) + 40
    model = AirbenchNet(10, [3, 32, 32], widths=[8, 8, 8], input_mean=[90.0] * 3, input_std=[30.0] * 3)
    model.set_whitening(images)
    half = model.whitening.weight.shape[0] // 2
    standardized = (images - 90.0) / 30.0
    responses = torch.nn.functional.conv2d(standardized, model.whitening.weight[:half])
    flat = responses.permute(1, 0, 2, 3).reshape(half, -1)
    torch.testing.assert_close(flat @ flat.T / flat.shape[1], torch.eye(half), atol=2e-3, rtol=0)
    torch.testing.assert_close(model.whitening.weight[half:], -model.whitening.weight[:half])
    assert not model.whitening.weight.requires_grad


def test_airbench_convolutions_start_by_passing_their_first_channels_through():
    conv, images = identity_conv(4, 8), torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(images)[:, :4], images)
    assert conv.weight.is_leaf and conv.weight.requires_grad


def test_airbench_needs_three_stages():
    with pytest.raises(ConfigError, match="widths needs 3 channel counts"):
        AirbenchNet(10, [3, 32, 32], widths=[8, 16])


def test_triangle_schedule_rises_then_falls_linearly():
    steps = 100
    factors = [triangle(step, steps) for step in range(steps + 1)]
    assert factors[0] == pytest.approx(0.2)
    assert max(factors) == pytest.approx(1.0, abs=0.01) and factors.index(max(factors)) == 23
    assert factors[-1] == pytest.approx(0.07)
    rises, falls = torch.tensor(factors[:24]).diff(), torch.tensor(factors[24:]).diff()
    assert (rises > 0).all() and (falls < 0).all()
    torch.testing.assert_close(falls, falls[:1].expand_as(falls))


def test_norm_lr_scale_finds_batch_norms_synced_across_processes_too():
    # Lightning's --trainer.sync_batchnorm swaps each BatchNorm2d for a SyncBatchNorm before the optimizer is built.
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(ConvBNNet(10, [1, 28, 28], widths=[8, 16], norm_lr_scale=4))
    rest, norms = parameter_groups(model)
    assert [len(rest["params"]), len(norms["params"])] == [2 + 2, 2 + 2]  # convolutions, linear layer; two norms
    assert norms["lr"] == pytest.approx(4 * model.hparams.lr)


@pytest.mark.parametrize(("optimizer", "fused"), [("adam", True), ("adamw", True), ("sgd", None)])
def test_adam_steps_with_the_fused_kernel_and_sgd_with_torchs_default(optimizer, fused, tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--model.optimizer", optimizer, "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--test_after_fit", "false")
    assert fitted.trainer.optimizers[0].param_groups[0]["fused"] is fused


@pytest.mark.slow
def test_compile_keeps_checkpoint_names_and_logits():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 28, 28) * 255
    plain = ReportMNISTNet(10, [1, 28, 28]).eval()
    compiled = ReportMNISTNet(10, [1, 28, 28], compile=True).eval()
    compiled.load_state_dict(plain.state_dict())
    compiled.compile_network()
    assert compiled.state_dict().keys() == plain.state_dict().keys()
    assert torch.allclose(plain(images), compiled(images), atol=1e-4)


class TrainingPredictions(L.Callback):
    """The last training epoch's predictions, read from the network's output in each step."""

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.net.register_forward_hook(self.keep_output)

    def keep_output(self, module, inputs, output) -> None:
        if module.training:
            self.output = output.detach()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.predictions, self.targets = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.predictions.append(self.output.argmax(1))
        self.targets.append(batch[1])


def test_epoch_figures_equal_a_direct_computation_on_the_same_predictions(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", "--test_after_fit", "false",
                 "--trainer.callbacks+=tests.test_models.TrainingPredictions")
    recorded = next(callback for callback in fitted.trainer.callbacks if isinstance(callback, TrainingPredictions))
    figures = {key: value.item() for key, value in fitted.trainer.callback_metrics.items()}
    model, data = fitted.model.eval(), fitted.datamodule.data
    with torch.no_grad():
        evaluated = {stage: (model.evaluation_logits(images), targets)
                     for stage, (images, targets) in {"val": data.val, "test": data.test}.items()}
    # Both splits end in a smaller batch, so an unweighted mean of the batches' losses would differ.
    assert all(len(targets) % fitted.datamodule.batch_size for _, targets in evaluated.values())
    figures |= fitted.trainer.test(model, datamodule=fitted.datamodule)[0]
    outcomes = {"train": (torch.cat(recorded.predictions), torch.cat(recorded.targets))}
    outcomes |= {stage: (logits.argmax(1), targets) for stage, (logits, targets) in evaluated.items()}
    for stage, (predictions, targets) in outcomes.items():
        assert figures[f"{stage}/acc"] == pytest.approx((predictions == targets).double().mean().item()), stage
        assert figures[f"{stage}/f1"] == pytest.approx(f1_score(targets, predictions, average="macro")), stage
    for stage, (logits, targets) in evaluated.items():
        mean_over_images = torch.nn.functional.cross_entropy(logits.double(), targets).item()
        assert figures[f"{stage}/loss"] == pytest.approx(mean_over_images, rel=1e-5), stage


class StepLosses(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.losses = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step - 1] = outputs["loss"].item()


@pytest.mark.parametrize("every", [1, 5])
def test_the_loss_curve_has_every_logging_steps_own_loss(every, tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--test_after_fit", "false",
                 "--trainer.log_every_n_steps", str(every), "--trainer.callbacks+=tests.test_models.StepLosses")
    losses = next(callback for callback in fitted.trainer.callbacks if isinstance(callback, StepLosses)).losses
    steps, values = read_curve(fitted.trainer.log_dir, "train/loss")
    assert steps == [step for step in losses if (step + 1) % every == 0]
    assert values == pytest.approx([losses[step] for step in steps])

