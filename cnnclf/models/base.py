"""The LightningModule every architecture inherits: an architecture declares ``features`` and ``classifier``;
the base measures the flattened width between them, standardizes the raw pixels and trains, evaluates, predicts."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnclf.checkpoints import check_fits
from cnnclf.errors import ConfigError
from cnnclf.limits import check_limit
from cnnclf.models.graphs import TrainingGraph, check_graphed_fit
from cnnclf.models.metrics import AccuracyAndF1
from cnnclf.models.optimization import Optimizer, Schedule, optimizer_and_schedule


def class_names(hparams) -> list[str]:
    """The class names a model (its ``hparams``) or a checkpoint's hyper-parameters give, by default the indices."""
    names = hparams.get("class_names")
    return list(names) if names else [str(index) for index in range(hparams.get("num_classes") or 0)]


class ImageClassifier(L.LightningModule):
    """An architecture's own options are keyword arguments of its ``__init__``, read from ``self.hparams``.

    Args:
        num_classes: the number of classes; decided by the data (the CLI links the data module's).
        image_shape: (C, H, W) of the network's input; decided by the data.
        class_names: each class's name, for reports and predictions; decided by the data.
        input_mean: each channel's mean, subtracted from raw pixels; decided by the data.
        input_std: each channel's standard deviation, divided by; decided by the data.
        optimizer: ``sgd`` (the report's), ``adam`` or ``adamw`` (with torch's fused step on the CPU and CUDA).
        lr: learning rate (the peak rate with ``onecycle``).
        momentum: SGD momentum (the report used 0.9).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty (decoupled for adamw).
        lr_schedule: ``constant`` (the report's), or per step ``onecycle``, ``cosine`` or ``triangle`` (airbench's).
        norm_lr_scale: learning-rate multiplier for batch-norm parameters (airbench: 64).
        label_smoothing: cross-entropy's label smoothing.
        channels_last: NHWC activations: faster convolutions with bf16 on recent CPUs and on GPUs.
        compile: ``torch.compile`` the network before the first step.
        cuda_graphs: on one CUDA GPU, replay the network's training forward and backward as CUDA graphs
            (``cnnclf.models.graphs``); each epoch's last partial batch is then left out.
        tta_hflip: evaluate and predict on the mean of each image's and its mirror's logits.
        tta_translate: and on views shifted this many pixels up-left and down-right (airbench's).
    """

    def __init__(self, num_classes: int | None = None, image_shape: list[int] | None = None,
                 class_names: list[str] | None = None, input_mean: list[float] | None = None,
                 input_std: list[float] | None = None,
                 optimizer: Optimizer = "sgd", lr: float = 1e-3, momentum: float = 0.9,
                 nesterov: bool = False, weight_decay: float = 0.0, lr_schedule: Schedule = "constant",
                 norm_lr_scale: float = 1.0, label_smoothing: float = 0.0,
                 channels_last: bool = False, compile: bool = False, cuda_graphs: bool = False,
                 tta_hflip: bool = False, tta_translate: int = 0) -> None:
        super().__init__()
        if num_classes is None or image_shape is None:
            raise ConfigError("num_classes and image_shape come from the data: build the model through the CLI, "
                              f"or pass them (found num_classes={num_classes}, image_shape={image_shape})")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, found {num_classes}")
        if len(image_shape) != 3:
            raise ConfigError(f"image_shape must be [channels, height, width], found {image_shape}")
        if lr <= 0 or norm_lr_scale <= 0:
            raise ConfigError(f"lr and norm_lr_scale must be positive, found {lr} and {norm_lr_scale}")
        if momentum < 0 or weight_decay < 0:
            raise ConfigError(f"momentum and weight_decay must be >= 0, found {momentum} and {weight_decay}")
        if not 0 <= label_smoothing <= 1:
            raise ConfigError(f"label_smoothing must be in [0, 1], found {label_smoothing}")
        if not 0 <= tta_translate < min(image_shape[1:]):
            # the shifted views mirror the edges, which needs fewer pixels of shift than of image
            raise ConfigError(f"tta_translate must be a number of pixels >= 0 and smaller than the "
                              f"{image_shape[1]}x{image_shape[2]} images, found {tta_translate}")
        # How to train, not what the model is: a graphed run resumes without graphs where they cannot run.
        self.save_hyperparameters(ignore=["cuda_graphs"])
        channels = image_shape[0]
        for name, value in (("input_mean", input_mean or [0.0] * channels),
                            ("input_std", input_std or [1.0] * channels)):
            self.register_buffer(name, torch.tensor(value).view(1, -1, 1, 1), persistent=False)

        features = self.features(channels)
        width = self._flat_width(features, image_shape)
        with torch.device("meta"):  # counted before it is built: the images' size decides the dense layer's
            head = self.classifier(width, num_classes)
        weights = sum(parameter.numel() for parameter in [*features.parameters(), *head.parameters()])
        check_limit("MILLION_WEIGHTS", weights // 10**6, f"{type(self).__name__} for {num_classes} classes of "
                    f"{'x'.join(map(str, image_shape))} (C, H, W) images: its weights in millions", ConfigError)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = nn.Sequential(features, nn.Flatten(), self.classifier(width, num_classes))
        self.net.to(memory_format=self.memory_format)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.example_input_array = torch.zeros(1, *image_shape)
        self.compiled_net = None
        self.training_graph = TrainingGraph(self.net) if cuda_graphs else None

        self.train_metrics = AccuracyAndF1(num_classes, prefix="train/")
        # Saved with the weights, so a run resumed mid-epoch reports the same epoch figures.
        self.train_metrics.persistent(True)
        # A label-smoothed loss stays well above 0 at 100% accuracy: the plain cross-entropy (nll) is logged beside it.
        self.val_metrics = AccuracyAndF1(num_classes, prefix="val/", with_loss=True, with_nll=label_smoothing > 0)
        self.test_metrics = AccuracyAndF1(num_classes, prefix="test/", with_loss=True, with_nll=label_smoothing > 0)

    def features(self, in_channels: int) -> nn.Sequential:
        """The convolution stack for images of ``in_channels`` channels."""
        raise NotImplementedError

    def classifier(self, in_features: int, num_classes: int) -> nn.Sequential:
        """The dense head from the flattened features to the logits."""
        raise NotImplementedError

    def _flat_width(self, features: nn.Module, image_shape: list[int]) -> int:
        try:
            with torch.no_grad():
                # eval(): a probe must not move batch-norm statistics (nor need 2+ values per channel)
                return features.eval()(torch.zeros(1, *image_shape)).flatten(1).shape[1]
        except RuntimeError as error:
            raise ConfigError(
                f"{type(self).__name__} cannot take {image_shape[1]}x{image_shape[2]} images with "
                f"{image_shape[0]} channel(s): {str(error).splitlines()[0]}"
            ) from None
        finally:
            features.train()

    def compile_network(self) -> None:
        """``torch.compile`` the network if asked, once, as a loop starts: not earlier, as the model summary's
        hooks and the TensorBoard graph's tracing would turn a compiled function eager for good."""
        if self.hparams.compile and self.compiled_net is None:
            # A compiled function, not a wrapped module, so checkpoints keep the plain parameter names.
            self.compiled_net = torch.compile(self.net.forward)

    def forward(self, images: Tensor) -> Tensor:
        """Logits for raw-pixel images (B, C, H, W)."""
        images = ((images.float() - self.input_mean) / self.input_std).contiguous(memory_format=self.memory_format)
        # TensorBoard draws the graph by tracing (again when a test follows a fit), which cannot
        # go through a compiled function or a CUDA graph.
        if torch.jit.is_tracing():
            return self.net(images)
        if self.training and self.training_graph is not None:
            return self.training_graph(images)
        return (self.compiled_net or self.net)(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        self.train_metrics.update(logits, targets)
        if self._loss_is_read_after(batch_index):
            # On the CPU: Lightning reads bar values after every later step of the epoch (a GPU wait each)
            self.log("train/loss", loss.detach().cpu(), prog_bar=True)
        return loss

    def _loss_is_read_after(self, batch_index: int) -> bool:
        """Whether the logger or the progress bar reads ``train/loss`` after this step: each ``self.log`` costs
        Lightning a good part of a small network's step."""
        trainer = self.trainer
        bar = trainer.progress_bar_callback
        redrawn = bar is not None and bar.is_enabled and (
            (batch_index + 1) % getattr(bar, "refresh_rate", 1) == 0 or batch_index + 1 == trainer.num_training_batches)
        logged = trainer.log_every_n_steps > 0 and (self.global_step + 1) % trainer.log_every_n_steps == 0
        return redrawn or logged or bool(trainer.fast_dev_run)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> Tensor:
        return self._evaluate(batch, self.test_metrics)  # for the test summary

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> tuple[Tensor, Tensor]:
        confidence, prediction = self.evaluation_logits(batch[0]).float().softmax(dim=1).max(dim=1)
        return prediction, confidence

    def evaluation_logits(self, images: Tensor) -> Tensor:
        logits = self._mirror_averaged(images)
        shift = self.hparams.tta_translate
        if shift:
            height, width = images.shape[2:]
            padded = F.pad(images.float(), (shift,) * 4, mode="reflect")
            up_left, down_right = padded[..., :height, :width], padded[..., 2 * shift :, 2 * shift :]
            logits = logits / 2 + (self._mirror_averaged(up_left) + self._mirror_averaged(down_right)) / 4
        return logits

    def _mirror_averaged(self, images: Tensor) -> Tensor:
        logits = self(images)
        if self.hparams.tta_hflip:
            logits = (logits + self(images.flip(3))) / 2
        return logits

    def _evaluate(self, batch: tuple[Tensor, Tensor], metrics: AccuracyAndF1) -> Tensor:
        images, targets = batch
        logits = self.evaluation_logits(images)
        metrics.update(logits, targets, loss=self.criterion(logits, targets))
        return logits

    def _log_epoch(self, metrics: AccuracyAndF1, prog_bar: bool) -> None:
        """Logs the epoch's figures once, and starts the next epoch's afresh (a fit resumed at an epoch's end
        ends that epoch again: its restored training counts log again)."""
        self.log_dict(metrics.counted_figures(), prog_bar=prog_bar)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        # Before the checkpoint callbacks, so an epoch-end checkpoint resumes with fresh figures.
        self._log_epoch(self.train_metrics, prog_bar=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, prog_bar=True)

    def on_fit_start(self) -> None:
        check_graphed_fit(self.trainer, self)  # the CLI asked already; a Trainer of a Python caller has not

    def on_train_start(self) -> None:
        self.compile_network()

    on_validation_start = on_test_start = on_predict_start = on_train_start

    def on_train_end(self) -> None:
        if self.training_graph is not None:
            self.training_graph.release()

    def on_test_epoch_start(self) -> None:
        self.test_metrics.reset()  # what an interrupted test counted

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_fits(checkpoint, self)

    def configure_optimizers(self):
        return optimizer_and_schedule(self)
