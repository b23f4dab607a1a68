"""Ablation sweeps: a grid of overrides on a base config, one ``cnnclf fit`` run per combination."""
