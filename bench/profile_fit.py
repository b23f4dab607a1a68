"""Where a recipe's fit spends its time: a cProfile of cnnclf's ``Trainer.fit`` beside one of the plain loop.

For each recipe, as ``bench/gpu_check.py`` runs it (``presets/gpu`` stacked on the recipes, the report's
configs as they are, cut at ``--max-time`` seconds): a 3-step fit that loads the CUDA kernels, one fit
timed without the profiler, the plain loop for as many steps, then both again under cProfile. Prints
the functions with the most time of their own (``--top``) for each: on a GPU, where a small network's
step is bound by launching its kernels, the Python that cnnclf and Lightning run per step shows there,
and so does every wait for the GPU (``.item()``, ``.tolist()``, ...), which ``bench/gpu_syncs.py``
then places.

    python3 bench/profile_fit.py cifar_best orl_best cifar --data data/seed [--top 45]

``--dry-run`` runs the same code on the CPU on tiny generated data, as tests/test_bench.py does.
"""

import argparse
import cProfile
import logging
import pstats
import shutil
import tempfile
from pathlib import Path

import lightning as L
from gpu_check import REPORT_CONFIGS, ROOT, fit, plain_loop, warmed_up_fit, write_tiny_data


def profiled(function, *args, **kwargs) -> tuple[object, pstats.Stats]:
    profile = cProfile.Profile()
    profile.enable()
    try:
        result = function(*args, **kwargs)
    finally:
        profile.disable()
    return result, pstats.Stats(profile)


def fit_profiled(config: str, data: Path, runs: Path, dry_run: bool, extra: list[str]) -> tuple[object, pstats.Stats]:
    """The recipe's fit with ``Trainer.fit`` alone profiled (not the start-up, nor the test after it)."""
    original_fit, profiles = L.Trainer.fit, []

    def profiled_fit(trainer, *args, **kwargs):
        result, stats = profiled(original_fit, trainer, *args, **kwargs)
        profiles.append(stats)
        return result

    L.Trainer.fit = profiled_fit
    try:
        _, cli = fit(config, data, runs, False, dry_run, extra)
    finally:
        L.Trainer.fit = original_fit
    return cli, profiles[0]


def print_top(title: str, stats: pstats.Stats, top: int) -> None:
    print(f"\n{title}\n\n| own ms | with callees ms | calls | function |\n| --- | --- | --- | --- |")
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:top]
    for (file, line, name), (_, calls, own, cumulative, _) in rows:
        where = file.split("site-packages/")[-1].split("dist-packages/")[-1].removeprefix(f"{ROOT}/")
        print(f"| {1000 * own:.1f} | {1000 * cumulative:.1f} | {calls} | {where}:{line} {name} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="recipes or report configs, e.g. cifar_best orl_best cifar")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "seed")
    parser.add_argument("--max-time", type=int, default=6, help="seconds of training for the report's configs")
    parser.add_argument("--top", type=int, default=45, help="functions listed per profile")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny generated data, one short epoch per run")
    args = parser.parse_args(argv)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    runs = Path(tempfile.mkdtemp(prefix="profile_fit_"))
    data = write_tiny_data(runs) if args.dry_run else args.data
    for config in args.configs:
        extra = ["--trainer.max_time", f"00:00:00:{args.max_time:02d}"] if config in REPORT_CONFIGS else []
        outcome, cli = warmed_up_fit(config, data, runs / "runs", False, args.dry_run, extra)
        plain = plain_loop(cli, cli.trainer.global_step, outcome.fit_seconds)
        print(f"\n## {config}: {cli.trainer.global_step} steps; fit {outcome.fit_seconds:.2f} s "
              f"({outcome.seconds_per_epoch:.3f} s/epoch), plain loop {plain:.3f} s/epoch")

        cli, fit_stats = fit_profiled(config, data, runs / "runs", args.dry_run, extra)
        _, plain_stats = profiled(plain_loop, cli, cli.trainer.global_step, float("inf"))
        print_top(f"### {config}: cnnclf's Trainer.fit, profiled", fit_stats, args.top)
        print_top(f"### {config}: the plain loop, profiled", plain_stats, args.top)
    shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
