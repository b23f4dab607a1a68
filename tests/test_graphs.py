"""``--model.cuda_graphs``: refused in one line where it cannot run, training batches of one size, evaluation
eager; on a CUDA GPU, a graphed fit that replays its graphs, matches an eager fit and resumes after SIGTERM."""

import re
import signal

import lightning as L
import pytest
import torch

from cnnclf.data import CIFARDataModule
from cnnclf.errors import ConfigError, DatasetError
from cnnclf.models import ConvBNNet
from tests.conftest import CONFIGS
from tests.test_cli import run

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="replays CUDA graphs: needs a CUDA GPU")
GRAPHED = ["--model.cuda_graphs", "true"]


@pytest.mark.parametrize(("options", "refusal"), [
    (["--model.compile", "true"], "--model.cuda_graphs true and --model.compile true both take"),
    (["--trainer.accumulate_grad_batches", "2"], "cannot accumulate --trainer.accumulate_grad_batches 2: set it to 1"),
    (["--trainer.devices", "2", "--trainer.strategy", "ddp"], "trains on one GPU in one process, and this fit's "
                                                              "strategy is DDPStrategy on 2 device(s)"),
    (["--trainer.strategy", "ddp_spawn"], "strategy is DDPStrategy on 1 device(s)"),
    (["--trainer.num_nodes", "2"], "on 2 device(s) (--trainer.devices, --trainer.strategy, --trainer.num_nodes)"),
    (["--trainer.accelerator", "cpu"], "replays CUDA graphs on one GPU, and this fit trains on cpu"),
])
def test_a_graphed_fit_that_cannot_run_is_refused_in_one_line_before_a_run_exists(options, refusal, tmp_path):
    with pytest.raises(SystemExit, match=re.escape(refusal)):
        run("fit", CONFIGS / "digits.yaml", tmp_path, *GRAPHED, *options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="for machines without a CUDA GPU")
def test_a_graphed_fit_on_a_machine_without_cuda_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(SystemExit, match=r"finds no CUDA GPU here\): train with --model.cuda_graphs false$"):
        run("fit", CONFIGS / "digits.yaml", tmp_path, *GRAPHED)
    assert list(tmp_path.iterdir()) == []


def test_evaluation_is_eager_so_a_checkpoint_tests_anywhere_with_graphs_asked_for(tmp_path):
    fitted = run("fit", CONFIGS / "digits.yaml", tmp_path, "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--test_after_fit", "false")
    tested = run("test", CONFIGS / "digits.yaml", tmp_path, *GRAPHED, "--ckpt_path", "last")
    assert tested.model.training_graph is not None and tested.trainer.callback_metrics["test/acc"] >= 0
    # How to train, not what the model is: the checkpoint does not make a resumed fit graphed.
    assert "cuda_graphs" not in torch.load(f"{fitted.trainer.log_dir}/checkpoints/last.ckpt",
                                           weights_only=True)["hyper_parameters"]


@pytest.mark.parametrize("graphed", [False, True])
def test_a_graphed_model_trains_on_batches_of_one_size_and_evaluates_every_image(graphed, tiny_data):
    data = CIFARDataModule(str(tiny_data["cifar"]), batch_size=64)  # 180 training images, 20 for validation
    trainer = L.Trainer(accelerator="cpu", logger=False)
    trainer.strategy.connect(ConvBNNet(data.num_classes, data.image_shape, cuda_graphs=graphed))
    data.trainer = trainer
    assert [len(targets) for _, targets in data.train_dataloader()] == ([64, 64] if graphed else [64, 64, 52])
    assert len(data.train_dataloader()) == (2 if graphed else 3)  # what the schedule counts its steps from
    assert [len(targets) for _, targets in data.val_dataloader()] == [20]
    assert sum(len(targets) for _, targets in data.test_dataloader()) == 50


def test_a_split_smaller_than_one_batch_is_refused_for_a_graphed_model(tiny_data):
    data = CIFARDataModule(str(tiny_data["cifar"]), batch_size=256)
    trainer = L.Trainer(accelerator="cpu", logger=False)
    trainer.strategy.connect(ConvBNNet(data.num_classes, data.image_shape, cuda_graphs=True))
    data.trainer = trainer
    with pytest.raises(DatasetError, match="fewer than one batch of 256"):
        data.train_dataloader()


@pytest.mark.skipif(torch.cuda.is_available(), reason="for machines without a CUDA GPU")
def test_a_graphed_fit_outside_the_cli_on_a_cpu_stops_at_its_first_step_naming_why(tiny_data, tmp_path):
    data = CIFARDataModule(str(tiny_data["cifar"]), batch_size=64)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(ConfigError, match="replays CUDA graphs on one GPU, and this fit trains on cpu"):
        trainer.fit(ConvBNNet(data.num_classes, data.image_shape, cuda_graphs=True), datamodule=data)


class GraphsSeen(L.Callback):
    """Each training step's epoch, batch size and the graph it replayed (kept, so each graph's id stays its own)."""

    def __init__(self) -> None:
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        graph = pl_module.training_graph
        self.seen.append((trainer.current_epoch, len(batch[1]), graph and graph.graphed))


def tiny_cifar_best(tiny_data, runs, *extra):
    """cifar_best with presets/gpu on 200 images in 4 batches of 50 a epoch, for 5 epochs: its whitening bias
    freezes after 3, and Lookahead averages from epoch 3."""
    return run("fit", CONFIGS / "cifar_best.yaml", runs, "--config", str(CONFIGS / "presets/gpu.yaml"),
               "--data.path", str(tiny_data["cifar"]), "--data.batch_size", "50", "--data.eval_batch_size", "50",
               "--trainer.max_epochs", "5", *extra)


def figures_of(cli) -> dict[str, float]:
    return {name: cli.trainer.callback_metrics[name].item() for name in ("test/acc", "test/loss")}


@needs_cuda
def test_a_graphed_fit_replays_its_graphs_and_matches_an_eager_fit(tiny_data, tmp_path):
    eager = tiny_cifar_best(tiny_data, tmp_path / "eager")
    graphed = tiny_cifar_best(tiny_data, tmp_path / "graphed", *GRAPHED,
                              "--trainer.callbacks+=tests.test_graphs.GraphsSeen")
    seen = next(callback for callback in graphed.trainer.callbacks if isinstance(callback, GraphsSeen)).seen
    assert graphed.trainer.global_step == eager.trainer.global_step == 20
    assert {size for _, size, _ in seen} == {50}
    graphs = [graph for _, _, graph in seen]
    # Captured at the first step, and again when AirbenchNet froze its whitening bias (epoch 3, step 12).
    assert len({id(graph) for graph in graphs}) == 2 and graphs.index(graphs[-1]) == 12
    assert graphed.model.training_graph.graphed is None  # released at the end of the fit
    eager_figures, graphed_figures = figures_of(eager), figures_of(graphed)
    assert graphed_figures["test/acc"] == pytest.approx(eager_figures["test/acc"], abs=0.1)
    assert graphed_figures["test/loss"] == pytest.approx(eager_figures["test/loss"], rel=0.15)


@needs_cuda
def test_a_graphed_fit_stopped_by_sigterm_resumes_like_a_straight_graphed_fit(tiny_data, tmp_path):
    straight = tiny_cifar_best(tiny_data, tmp_path / "straight", *GRAPHED)
    with pytest.raises(SystemExit) as stopped:
        tiny_cifar_best(tiny_data, tmp_path / "killed", *GRAPHED,
                        "--trainer.callbacks+=tests.test_reliability.SignalAtStep", "--trainer.callbacks.step=10")
    assert stopped.value.code == 128 + signal.SIGTERM
    resumed = tiny_cifar_best(tiny_data, tmp_path / "killed", *GRAPHED, "--ckpt_path", "last")
    assert resumed.trainer.global_step == straight.trainer.global_step == 20
    straight_figures, resumed_figures = figures_of(straight), figures_of(resumed)
    assert resumed_figures["test/acc"] == pytest.approx(straight_figures["test/acc"], abs=0.1)
    assert resumed_figures["test/loss"] == pytest.approx(straight_figures["test/loss"], rel=0.15)
