"""Ablation sweeps: a grid of overrides on a base config, one ``cnnclf fit`` run per combination."""

from cnnclf.sweeps.results import load_results
from cnnclf.sweeps.runner import run_sweep
from cnnclf.sweeps.spec import load_sweep

__all__ = ["load_results", "load_sweep", "run_sweep"]
