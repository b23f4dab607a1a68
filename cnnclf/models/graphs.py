"""``--model.cuda_graphs true``: the network's training forward and backward replayed as CUDA graphs, one launch
each instead of a few hundred (docs/gpu.md, CUDA graphs). Only the network is captured; evaluation stays eager.
"""

import torch
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
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not images.is_cuda or (distributed and torch.distributed.get_world_size() > 1):
            raise ConfigError(f"cuda_graphs=True replays CUDA graphs on one GPU, and this fit trains on {images.device}"
                              f"{' in several processes' if distributed else ''}: set cuda_graphs=False")
        self.release()
        before = [buffer.clone() for buffer in self.network.buffers()]
        # torch runs three passes on a side stream first: their batch-norm updates are put back. A holder of its
        # own keeps the network's forward as it was, for evaluation and other sizes.
        self.graphed = torch.cuda.make_graphed_callables(nn.Sequential(self.network), (images,))
        for buffer, value in zip(self.network.buffers(), before, strict=True):
            buffer.copy_(value)
        self.shape, self.weights = images.shape, weights


def check_graphed_fit(config) -> None:
    """Refuse, before anything is built, a fit asked to replay graphs in a setup that cannot: ``config`` is
    the fit's (``model.init_args``, ``trainer``)."""
    model, trainer = config.model.init_args, config.trainer
    if not model.get("cuda_graphs"):
        return
    off = "--model.cuda_graphs false"
    if model.get("compile"):
        problem = ("and --model.compile true both take the per-step launch cost away, and a compiled network is not "
                   "captured: set one of them false")
    elif trainer.accumulate_grad_batches != 1:
        problem = (f"replays the backward into the same gradient buffers every step, so it cannot accumulate "
                   f"--trainer.accumulate_grad_batches {trainer.accumulate_grad_batches}: set it to 1, or {off}")
    elif str(trainer.strategy) not in ("auto", "single_device") or trainer.num_nodes != 1 or devices(trainer) > 1:
        problem = (f"trains on one GPU in one process, and this fit asks for --trainer.devices {trainer.devices} "
                   f"--trainer.strategy {trainer.strategy} --trainer.num_nodes {trainer.num_nodes}: use one device, "
                   f"or {off}")
    elif str(trainer.accelerator) not in ("auto", "gpu", "cuda"):
        problem = f"replays CUDA graphs, and --trainer.accelerator {trainer.accelerator} has none: {off}, or a GPU"
    elif not torch.cuda.is_available():
        problem = f"replays CUDA graphs, and torch {torch.__version__} finds no CUDA GPU here: train with {off}"
    else:
        return
    raise ConfigError(f"--model.cuda_graphs true {problem}")


def devices(trainer) -> int:
    """How many devices ``--trainer.devices`` asks for: a count (-1: all), indices ([0, 1] or "0,1"), or auto."""
    asked = trainer.devices
    if str(asked) in ("auto", "-1"):
        return torch.cuda.device_count()
    if isinstance(asked, list) or "," in str(asked):
        return len(asked if isinstance(asked, list) else str(asked).strip(",").split(","))
    return int(asked)
