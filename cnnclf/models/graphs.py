"""``--model.cuda_graphs true``: the network's training forward and backward replayed as CUDA graphs, one launch
each instead of a few hundred (docs/gpu.md, CUDA graphs). Only the network is captured; evaluation stays eager.
"""

import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor, nn

from cnnclf.errors import ConfigError


class TrainingGraph:
    """Calls ``network`` in training, captured on the first call and again whenever a weight has moved in
    memory (a graph replays fixed addresses) or changed whether it trains."""

    def __init__(self, network: nn.Module) -> None:
        self.network = network
        self.release()

    def release(self) -> None:
        """Drop the graphs and their memory (at the end of a fit, before Lightning moves the weights)."""
        self.graphed, self.shape, self.weights = None, None, None

    def __call__(self, images: Tensor) -> Tensor:
        weights = [(parameter.data_ptr(), parameter.requires_grad) for parameter in self.network.parameters()]
        if weights != self.weights:
            self.capture(images, weights)
        elif images.shape != self.shape:
            return self.network(images)
        return self.graphed(images)

    def capture(self, images: Tensor, weights: list[tuple[int, bool]]) -> None:
        self.release()
        before = [buffer.clone() for buffer in self.network.buffers()]
        # torch runs three passes on a side stream first: their batch-norm updates are put back. A holder of its
        # own keeps the network's forward as it was, for evaluation and other sizes.
        self.graphed = torch.cuda.make_graphed_callables(nn.Sequential(self.network), (images,))
        for buffer, value in zip(self.network.buffers(), before, strict=True):
            buffer.copy_(value)
        self.shape, self.weights = images.shape, weights


def check_graphed_fit(trainer, model) -> None:
    """Refuse a graphed fit the built ``trainer`` cannot replay: the CLI asks before a run folder exists."""
    if model.training_graph is None:
        return
    off = "--model.cuda_graphs false"
    if model.hparams.compile:
        problem = ("and --model.compile true both take the per-step launch cost away, and a compiled network is not "
                   "captured: set one of them false")
    elif trainer.accumulate_grad_batches != 1:
        problem = (f"replays the backward into the same gradient buffers every step, so it cannot accumulate "
                   f"--trainer.accumulate_grad_batches {trainer.accumulate_grad_batches}: set it to 1, or {off}")
    elif not isinstance(trainer.strategy, SingleDeviceStrategy):
        problem = (f"trains on one GPU in one process, and this fit's strategy is {type(trainer.strategy).__name__} "
                   f"on {trainer.world_size} device(s) (--trainer.devices, --trainer.strategy, --trainer.num_nodes): "
                   f"use one device, or {off}")
    elif trainer.strategy.root_device.type != "cuda":
        found = "" if torch.cuda.is_available() else f" (torch {torch.__version__} finds no CUDA GPU here)"
        problem = (f"replays CUDA graphs on one GPU, and this fit trains on {trainer.strategy.root_device.type}"
                   f"{found}: train with {off}")
    else:
        return
    raise ConfigError(f"--model.cuda_graphs true {problem}")
