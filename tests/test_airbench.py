"""AirbenchNet and the parts of its recipe, trained through the CLI on tiny CIFAR-format pickles."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnclf.data import CIFARDataModule
from tests.conftest import CONFIGS, report_records, write_report_pickle
from tests.test_cli import run

TINY = ["--model.widths", "[8, 16, 16]", "--data.batch_size", "50", "--data.eval_batch_size", "50",
        "--trainer.precision", "32-true"]


@pytest.fixture(scope="module")
def fitted(tiny_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("airbench")
    cli = run("fit", CONFIGS / "cifar_best.yaml", runs, "--data.path", str(tiny_data["cifar"]), *TINY,
              "--trainer.max_epochs", "3", "--model.whiten_bias_epochs", "0",
              # the recipe's Lookahead, early and often enough for 3 tiny epochs
              "--trainer.callbacks.start_epoch", "1", "--trainer.callbacks.every_n_steps", "2")
    return cli, runs


def test_whitening_comes_from_the_training_images_and_is_trained_only_as_asked(fitted, tiny_data):
    cli, _ = fitted
    data = CIFARDataModule(str(tiny_data["cifar"]), val_split=0)
    expected = type(cli.model)(10, [3, 32, 32], widths=[8, 16, 16], input_mean=data.input_mean,
                               input_std=data.input_std)
    expected.set_whitening(data.data.train[0])
    torch.testing.assert_close(cli.model.whitening.weight, expected.whitening.weight)
    assert torch.equal(cli.model.whitening.bias, torch.zeros(24))  # whiten_bias_epochs 0: frozen from the start


def test_batch_norm_shifts_train_at_the_scaled_rate(fitted):
    cli, _ = fitted
    groups = cli.trainer.optimizers[0].param_groups
    norms = {id(p) for m in cli.model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert [len(groups[0]["params"]), len(groups[1]["params"])] == [
        sum(id(p) not in norms for p in cli.model.parameters()), len(norms)]
    assert groups[1]["initial_lr"] == pytest.approx(64 * groups[0]["initial_lr"])
    assert groups[1]["weight_decay"] == pytest.approx(groups[0]["weight_decay"] / 64)


def test_test_loads_the_whitening_from_the_checkpoint_not_from_the_data(fitted, tmp_path):
    cli, runs = fitted
    other = write_report_pickle(tmp_path / "OTHER", report_records(200, (32, 32, 3), list(range(10)), seed=5),
                                report_records(50, (32, 32, 3), list(range(10)), seed=6))
    checkpoint = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    tested = run("test", CONFIGS / "cifar_best.yaml", runs, "--data.path", str(other), *TINY,
                 "--ckpt_path", str(checkpoint))
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(tested.model.whitening.weight, saved["net.0.0.weight"])
    torch.testing.assert_close(tested.model.whitening.bias, saved["net.0.0.bias"])


def test_lookahead_leaves_the_network_on_its_average(fitted):
    cli, _ = fitted
    lookahead = next(c for c in cli.trainer.callbacks if type(c).__name__ == "Lookahead")
    for name, value in cli.model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, lookahead.average[name], msg=name)
    assert np.isfinite(cli.trainer.callback_metrics["test/acc"].item())
