"""Every preset stacks on a recipe, keeps the recipe's callbacks, and trains with the progress bar off."""

import pytest

from cnnclf.models.lookahead import Lookahead
from tests.conftest import CONFIGS
from tests.test_cli import run

PRESETS = sorted((CONFIGS / "presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[preset.stem for preset in PRESETS])
def test_every_preset_trains_a_recipe_with_its_callbacks_and_no_progress_bar(preset, tiny_data, tmp_path):
    # cifar_best brings its own callback (Lookahead), which a preset's callback list must not replace.
    cli = run("fit", CONFIGS / "cifar_best.yaml", tmp_path, "--config", str(preset),
              "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true",
              "--data.path", str(tiny_data["cifar"]))
    assert cli.trainer.global_step == 1
    assert cli.trainer.progress_bar_callback is None
    assert any(isinstance(callback, Lookahead) for callback in cli.trainer.callbacks)
    assert "test/acc" in cli.trainer.callback_metrics
