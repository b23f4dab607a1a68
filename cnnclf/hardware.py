"""What this machine can run, and runs fast: the CLI refuses a GPU the machine lacks in one line, and runs
a bf16 recipe in a native precision where bf16 would be emulated (several times slower: a recipe that asks
for bf16 to be fast must not become the slowest way to run)."""

import sys

import torch

from cnnclf.errors import ConfigError


def fit_to_this_machine(trainer) -> str | None:
    """Check and adjust the trainer config before anything is built; returns what to tell the user, if anything."""
    # Lightning alone says "No supported gpu backend found!", which names neither the option nor a way out.
    accelerator = trainer.accelerator
    if accelerator in ("gpu", "cuda") and not (torch.cuda.is_available()
                                               or (accelerator == "gpu" and torch.backends.mps.is_available())):
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"--trainer.accelerator {accelerator} (presets/gpu sets it) needs a GPU, and torch "
                          f"{torch.__version__} ({build}) finds none: leave out presets/gpu to train on the CPU, "
                          "or install a CUDA build of torch (pytorch.org's install selector)")
    return without_emulated_bf16(trainer)


def without_emulated_bf16(trainer) -> str | None:
    """Where bf16 would be emulated, set the precision to 32-true on a CPU, to 16-mixed (bf16-mixed) or 32-true
    on a GPU older than Ampere (a T4, a V100); returns the sentence that says so."""
    precision, accelerator = str(trainer.precision), trainer.accelerator
    if not precision.startswith("bf16"):
        return None
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                      and not torch.backends.mps.is_available())
    # Asking the GPU its generation starts CUDA here, which must wait where Lightning forks its processes
    # (ddp_fork, ddp_notebook, which it picks for an interactive session).
    forks = (any(name in str(trainer.strategy) for name in ("fork", "notebook")) or hasattr(sys, "ps1")
             or sys.flags.interactive)
    if on_cpu and not cpu_has_bf16():
        where, instead = "this CPU has no bf16 arithmetic (AVX-512 or AMX)", "32-true"
    elif trains_on_cuda(accelerator) and not forks and not gpu_has_bf16():
        where = f"this GPU ({torch.cuda.get_device_name()}) has no bf16 arithmetic (before Ampere)"
        instead = "16-mixed" if precision == "bf16-mixed" else "32-true"
    else:
        return None
    trainer.precision = instead
    return f"cnnclf: {where}, where precision {precision} runs several times slower: running in {instead} instead"


def trains_on_cuda(accelerator) -> bool:
    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX-512 or AMX; on an AVX2-only CPU it emulates it)."""
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def gpu_has_bf16() -> bool:
    """Whether the GPU has bf16 tensor cores (Ampere and later); torch emulates bf16 on older ones."""
    return torch.cuda.get_device_capability() >= (8, 0)
