"""Opening checkpoints: weights only on every path, cnnclf classes only, clear errors, atomic saves."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch

from cnnclf.checkpoints import FINISHED_MARKER, SafeCheckpointIO, find_checkpoint
from cnnclf.errors import CheckpointError
from cnnclf.explore import load_model
from cnnclf.models import ReportMNISTNet
from tests.conftest import CONFIGS
from tests.test_cli import run


class _Payload:
    """Unpickling this runs ``touch sentinel``."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A digits checkpoint from one epoch of ``cnnclf fit``."""
    runs = tmp_path_factory.mktemp("runs")
    fitted = run("fit", CONFIGS / "digits.yaml", runs, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    return Path(fitted.trainer.checkpoint_callback.best_model_path)


def altered(trained: Path, path: Path, **hparams) -> Path:
    content = torch.load(trained, weights_only=True)
    content["hyper_parameters"].update(hparams)
    torch.save(content, path)
    return path


def cli_ways_to_load(path: Path) -> list[list[str]]:
    """Every subcommand that opens a checkpoint: test, predict, and fit resuming from it."""
    return [[subcommand, "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path", str(path)]
            for subcommand in ("test", "predict", "fit")]


def run_cli(arguments: list[str], runs: Path):
    subcommand, _, config, *rest = arguments
    return run(subcommand, config, runs, *rest)


def test_round_trip(tmp_path):
    model = ReportMNISTNet(10, [1, 8, 8])
    torch.save({"hyper_parameters": dict(model.hparams) | {"_class_path": "cnnclf.models.ReportMNISTNet"},
                "state_dict": model.state_dict()}, tmp_path / "ok.ckpt")
    images = torch.rand(2, 1, 8, 8) * 255
    assert torch.equal(load_model(tmp_path / "ok.ckpt")(images), model.eval()(images))


def test_a_malicious_payload_is_refused_everywhere_and_never_runs(trained, tmp_path):
    sentinel = tmp_path / "pwned"
    path = altered(trained, tmp_path / "evil.ckpt", note=_Payload(sentinel))
    with pytest.raises(CheckpointError, match="evil.ckpt: refused, it asks to load code"):
        load_model(path)
    for arguments in cli_ways_to_load(path):
        with pytest.raises(SystemExit, match="evil.ckpt: refused, it asks to load code.*nothing was run"):
            run_cli(arguments, tmp_path)
    # --ckpt_path last is found after the CLI has parsed its arguments: Lightning itself loads it.
    last = tmp_path / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(path.read_bytes())
    for subcommand in ("fit", "test"):
        with pytest.raises(SystemExit, match="last.ckpt: refused, it asks to load code"):
            run(subcommand, CONFIGS / "digits.yaml", tmp_path / "runs", "--ckpt_path", "last")
    assert not sentinel.exists()


def test_a_foreign_class_in_the_hyperparameters_is_never_imported(trained, tmp_path, monkeypatch):
    sentinel = tmp_path / "imported"
    (tmp_path / "evil_module.py").write_text(f"open({str(sentinel)!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = altered(trained, tmp_path / "foreign.ckpt", _class_path="evil_module.Net")
    with pytest.raises(CheckpointError, match="refusing class 'evil_module.Net'"):
        load_model(path)
    for arguments in cli_ways_to_load(path):
        with pytest.raises(SystemExit, match="foreign.ckpt: refusing class 'evil_module.Net'"):
            run_cli(arguments, tmp_path)
    assert not sentinel.exists()


@pytest.mark.parametrize("class_path", ["os.system", "collections.OrderedDict", "cnnclf.data.MNISTDataModule"])
def test_load_model_takes_only_cnnclf_architectures(trained, tmp_path, class_path):
    with pytest.raises(CheckpointError, match=f"refusing class '{class_path}'"):
        load_model(altered(trained, tmp_path / "foreign.ckpt", _class_path=class_path))


def odd_callbacks(trained: Path, callbacks) -> Path:
    content = torch.load(trained, weights_only=True)
    content["callbacks"] = callbacks
    odd = trained.parent / "odd.ckpt"  # in its run's checkpoints folder, where the run folder is looked up
    torch.save(content, odd)
    return odd


@pytest.mark.parametrize("callbacks", [[1, 2], "text", {"x": 3}])
def test_a_checkpoint_whose_callback_states_are_no_mappings_is_one_line(trained, tmp_path, callbacks):
    odd = odd_callbacks(trained, callbacks)
    try:
        with pytest.raises(SystemExit, match="odd.ckpt: its callbacks' states are .*, not a mapping of mappings"):
            run_cli(["test", "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path", str(odd)], tmp_path)
    finally:
        odd.unlink()


def test_a_checkpoint_whose_folder_names_are_odd_is_still_tested(trained, tmp_path):
    odd = odd_callbacks(trained, {"x": {"dirpath": ["a"]}, "y": {"dirpath": 12}})
    try:
        tested = run_cli(["test", "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path", str(odd)], tmp_path)
    finally:
        odd.unlink()
    assert "test/acc" in tested.trainer.callback_metrics


@pytest.mark.parametrize("size", ["half", "empty"])
def test_a_truncated_checkpoint_is_a_clear_error(trained, tmp_path, size):
    data = trained.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[: len(data) // 2] if size == "half" else b"")
    with pytest.raises(CheckpointError, match="cut.ckpt: not a complete checkpoint") as error:
        load_model(path)
    assert "." not in str(error.value).rpartition(": ")[2]  # torch's reason, its first sentence only
    for arguments in cli_ways_to_load(path):
        with pytest.raises(SystemExit, match="cut.ckpt: not a complete checkpoint"):
            run_cli(arguments, tmp_path)


def test_a_checkpoint_for_other_data_is_a_clear_error(trained, tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="trained for 10 classes of \\[1, 8, 8\\] images, but this data has 40"):
        run("test", CONFIGS / "orl_fixed.yaml", tmp_path, "--data.path", str(tiny_data["orl"]),
            "--ckpt_path", str(trained))


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(trained, tmp_path):
    """A save killed mid-write (here: the object fails to pickle half-way) must not touch the target."""
    target = tmp_path / "last.ckpt"
    target.write_bytes(trained.read_bytes())
    content = torch.load(trained, weights_only=True)
    content["unpicklable"] = lambda: None
    with pytest.raises(Exception, match="pickle"):
        SafeCheckpointIO().save_checkpoint(content, target)
    assert target.read_bytes() == trained.read_bytes()
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    assert SafeCheckpointIO().load_checkpoint(target)["state_dict"].keys() == content["state_dict"].keys()


def test_sigkill_during_saves_never_leaves_a_broken_checkpoint(tmp_path):
    """A process saving a 40 MB checkpoint over and over is SIGKILLed at some point in a write."""
    target = tmp_path / "last.ckpt"
    saver = subprocess.Popen([sys.executable, "-c", (
        "import sys, torch\n"
        "from cnnclf.checkpoints import SafeCheckpointIO\n"
        "io = SafeCheckpointIO()\n"
        "for step in range(10**6):\n"
        "    io.save_checkpoint({'state_dict': {'w': torch.full((10**7,), float(step))}, 'step': step}, sys.argv[1])\n"
        "    print(step, flush=True)\n"
    ), str(target)], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let it finish a few saves, then kill it during the next one
        saver.stdout.readline()
    saver.send_signal(signal.SIGKILL)
    saver.wait()
    content = SafeCheckpointIO().load_checkpoint(target)
    assert content["step"] >= 2 and torch.all(content["state_dict"]["w"] == content["step"])
    SafeCheckpointIO().save_checkpoint(content, target)  # the next save clears what the killed one left
    assert list(tmp_path.iterdir()) == [target]


def fake_run(root: Path, name: str, files: list[str], age: int) -> Path:
    """A run folder holding empty stand-ins of ``files``, last written ``age`` seconds ago."""
    run = root / name
    for file in files:
        (run / file).parent.mkdir(parents=True, exist_ok=True)
        (run / file).write_bytes(b"")
        os.utime(run / file, (time.time() - age, time.time() - age))
    return run


def test_best_is_the_newest_finished_run_never_an_unfinished_one(tmp_path):
    finished = fake_run(tmp_path, "version_0", ["checkpoints/best.ckpt", "checkpoints/last.ckpt", FINISHED_MARKER], 30)
    stopped = fake_run(tmp_path, "version_1", ["checkpoints/last.ckpt"], 10)
    assert find_checkpoint(tmp_path, "best")[0] == finished / "checkpoints/best.ckpt"
    assert find_checkpoint(tmp_path, "last")[0] == stopped / "checkpoints/last.ckpt"  # resuming takes the newest
    without_validation = fake_run(tmp_path, "version_2", ["checkpoints/last.ckpt", FINISHED_MARKER], 5)
    path, why = find_checkpoint(tmp_path, "best")
    assert path == without_validation / "checkpoints/last.ckpt" and "without validation" in why


def test_best_without_a_finished_run_says_which_run_stopped(tmp_path):
    fake_run(tmp_path, "version_0", ["checkpoints/best.ckpt", "checkpoints/last.ckpt"], 10)
    with pytest.raises(CheckpointError, match="no run under .* finished training .*version_0, stopped early"):
        find_checkpoint(tmp_path, "best")


def test_without_validation_the_end_of_training_is_saved_between_every_n_epochs(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--data.val_split", "0",
                 "--last_checkpoint.every_n_epochs", "2", "--test_after_fit", "false")
    folder = Path(fitted.trainer.log_dir) / "checkpoints"
    assert [path.name for path in folder.iterdir()] == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == fitted.trainer.global_step


def test_with_validation_last_follows_training_when_the_best_stops_improving(tmp_path, caplog):
    """A learning rate too small to move val/acc: best.ckpt stays at the first epoch, last.ckpt must not."""
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--model.lr", "1e-9",
                 "--test_after_fit", "false")
    folder = Path(fitted.trainer.log_dir) / "checkpoints"
    assert torch.load(folder / "best.ckpt", weights_only=True)["epoch"] == 0
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, fitted.trainer.global_step)
    assert "`weights_only` was not set" not in caplog.text  # Lightning's note on every such save


class SaveCounter(L.Callback):
    """Counts the checkpoints built at each training step."""

    def __init__(self) -> None:
        self.saves_per_step: Counter = Counter()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saves_per_step[checkpoint["global_step"]] += 1


def test_an_epoch_with_a_new_best_writes_best_and_last_once_each(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--test_after_fit", "false",
                 "--trainer.callbacks+", "tests.test_checkpoints.SaveCounter")
    counter = next(callback for callback in fitted.trainer.callbacks if isinstance(callback, SaveCounter))
    epoch = fitted.trainer.num_training_batches
    assert sorted(counter.saves_per_step) == [epoch, 2 * epoch, 3 * epoch]
    assert counter.saves_per_step[epoch] == 2  # the first epoch is always a new best: best.ckpt and last.ckpt
    assert set(counter.saves_per_step.values()) <= {1, 2}


@pytest.mark.parametrize("val_split", ["0.1", "0"])
def test_a_time_interval_skips_routine_saves_but_not_a_new_best_or_the_end(tmp_path, val_split):
    """A learning rate too small to move val/acc: only the first epoch is a new best."""
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "3", "--model.lr", "1e-9",
                 "--data.val_split", val_split, "--last_checkpoint.train_time_interval", "1:00:00",
                 "--test_after_fit", "false", "--trainer.callbacks+", "tests.test_checkpoints.SaveCounter")
    counter = next(callback for callback in fitted.trainer.callbacks if isinstance(callback, SaveCounter))
    epoch = fitted.trainer.num_training_batches
    with_validation = {epoch: 1, 3 * epoch: 1}  # best.ckpt, then last.ckpt as training ends
    assert counter.saves_per_step == (with_validation if val_split != "0" else {3 * epoch: 1})
    last = torch.load(Path(fitted.trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == fitted.trainer.global_step


def test_without_last_checkpoints_a_run_with_validation_keeps_its_best_only(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "2", "--model.lr", "1e-9",
                 "--last_checkpoint.save_top_k", "0", "--test_after_fit", "false")
    assert [path.name for path in (Path(fitted.trainer.log_dir) / "checkpoints").iterdir()] == ["best.ckpt"]


RESAVE_TAGGED_FOR_A_GPU = """
import sys, torch
torch.serialization.register_package(0, lambda storage: "cuda:0" if storage.device.type == "cpu" else None,
                                     lambda storage, location: None)
torch.save(torch.load(sys.argv[1], weights_only=True), sys.argv[2])
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="for machines without a GPU")
def test_a_checkpoint_from_a_gpu_tests_and_resumes_on_a_machine_without_one(tmp_path):
    constant = ("--model.lr_schedule", "constant", "--test_after_fit", "false")  # resumable for more epochs
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", *constant)
    from_a_gpu = tmp_path / "from_a_gpu.ckpt"
    # As torch.save writes a GPU run's checkpoint: every tensor tagged for cuda:0 (in its own process,
    # as the tag stays registered).
    subprocess.run([sys.executable, "-c", RESAVE_TAGGED_FOR_A_GPU, f"{fitted.trainer.log_dir}/checkpoints/last.ckpt",
                    str(from_a_gpu)], check=True)
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(from_a_gpu, weights_only=True)
    tested = run("test", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(from_a_gpu))
    assert "test/acc" in tested.trainer.callback_metrics
    resumed = run("fit", CONFIGS / "digits.yaml", tmp_path, "--ckpt_path", str(from_a_gpu),
                  "--trainer.max_epochs", "2", *constant)
    assert resumed.trainer.current_epoch == 2


def test_the_gpu_preset_spaces_routine_saves_by_time(tmp_path, tiny_data):
    fitted = run("fit", CONFIGS / "orl_fixed.yaml", tmp_path, "--config", str(CONFIGS / "presets/gpu.yaml"),
                 "--trainer.accelerator", "cpu", "--trainer.fast_dev_run", "true", "--data.path", str(tiny_data["orl"]))
    last = next(callback for callback in fitted.trainer.checkpoint_callbacks if callback.monitor is None)
    assert (last.every_n_epochs, str(fitted.config.fit.last_checkpoint.train_time_interval)) == (0, "0:00:30")


def test_a_best_checkpoint_with_a_config_is_looked_for_in_its_experiment_only(tmp_path):
    run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    with pytest.raises(SystemExit, match=r"no checkpoint under .*default/\*/checkpoints"):
        run("test", CONFIGS / "digits.yaml", tmp_path, "--trainer.logger.init_args.name", "default",
            "--ckpt_path", "best")


def test_load_model_of_a_checkpoint_without_its_class_says_so(tmp_path):
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match="its hyper-parameters do not name its model class"):
        load_model(bare)
