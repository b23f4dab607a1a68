"""``cnnclf-sweep FILE``: every combination of a sweep as its own ``cnnclf fit ... --test_after_fit true`` process
in ``<out>/<run name>/``, tabulated; run it again after an interruption to continue (docs/sweeps.md)."""

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from cnnclf.errors import ConfigError, one_line_errors
from cnnclf.explore import RUN_RECORD, Run, read_json, read_run
from cnnclf.files import write_atomically
from cnnclf.sweeps.results import write_tables
from cnnclf.sweeps.spec import PlannedRun, Sweep, load_sweep


def run_sweep(sweep_file: str | Path, out: str | Path | None = None, retry_failed: bool = False,
              dry_run: bool = False) -> list[Run]:
    sweep = load_sweep(sweep_file)
    out = Path(out or Path("runs") / "sweeps" / sweep.name)
    planned, results = sweep.runs(), []
    for number, run in enumerate(planned, start=1):
        run_dir, settings = out / run.name, sweep.arguments(run)
        fingerprint = _fingerprint(sweep, settings)
        state = _state(run_dir, fingerprint, retry_failed)
        print(f"[{number}/{len(planned)}] {run.name}: {state}", flush=True)
        if dry_run:
            continue
        if state == "to run" and run_dir.exists():
            shutil.rmtree(run_dir)  # an attempt that saved no checkpoint: only partial logs to lose
        if state != "finished":
            resume = [f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"] if state == "resuming" else []
            _train(run, run_dir, [*settings, *resume, "--test_after_fit=true", "--trainer.enable_progress_bar=false",
                                  f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=",
                                  f"--trainer.logger.init_args.version={run.name}"], fingerprint)
        result = read_run(run_dir)
        print("    " + _summary(result), flush=True)
        results.append(result)
        paths = write_tables(results, out, f"sweep {sweep.name}")
    if not dry_run:
        print(f"\nResults: {', '.join(str(path) for path in paths)}")
    return results


def _state(run_dir: Path, fingerprint: str, retry_failed: bool) -> str:
    record = read_json(run_dir / RUN_RECORD)
    if record:
        if record.get("fingerprint") != fingerprint:
            raise ConfigError(f"{run_dir}: finished with other settings (the sweep file or its base config changed "
                              "since); delete that run's folder to redo it, or pass --out for a new sweep folder")
        if record["status"] == "ok" or not retry_failed:
            return "finished"
    return "resuming" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "to run"


def _train(run: PlannedRun, run_dir: Path, arguments: list[str], fingerprint: str) -> None:
    command = [sys.executable, "-m", "cnnclf", "fit", *arguments]
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "sweep.log"
    start = time.perf_counter()
    with log_path.open("a") as log:  # an interrupted or failed attempt's log stays, above this one's
        if log.tell():
            log.write(f"\n--- cnnclf-sweep: run again at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        attempt = log.tell()
    with log_path.open("a") as log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT) as process:
        try:
            returncode = process.wait()
        except KeyboardInterrupt:  # the run has the Ctrl-C too: it finishes its step and saves (subprocess.run
            process.wait()  # would kill it within 0.25 s); a second Ctrl-C stops both at once
            raise
    record = {"name": run.name, "overrides": run.overrides, "command": command[1:], "fingerprint": fingerprint,
              "status": "ok" if returncode == 0 else "failed", "wall_seconds": round(time.perf_counter() - start, 2)}
    if returncode != 0:  # the CLI's own error line, else the last line of the log
        with log_path.open() as log:
            log.seek(attempt)
            lines = [line.strip() for line in log.read().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("cnnclf: error:")]
        record["error"] = (errors or lines or ["no output"])[-1] + f" (exit {returncode}; see {log_path})"
    # Atomic: a sweep killed while writing the record must not leave one the next run cannot read.
    write_atomically(run_dir / RUN_RECORD, lambda stream: stream.write(json.dumps(record, indent=1).encode()))


def _fingerprint(sweep: Sweep, arguments: list[str]) -> str:
    """What decides a run's result: its settings and the content of the base configs (not where it is saved)."""
    digest = hashlib.sha256(json.dumps(arguments).encode())
    for path in sweep.base:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _summary(result: Run) -> str:
    if result.status != "ok":
        return f"failed: {result.record['error']}"
    validation = "" if result.val_accuracy is None else f"val accuracy {result.val_accuracy:.2%}, "
    return (f"{validation}test accuracy {result.test_accuracy:.2%}, macro F1 {result.test_macro_f1:.4f}, "
            f"{result.epochs} epochs, {result.record['wall_seconds']:.1f} s")


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cnnclf-sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_file", help="a sweep YAML file, or a shipped sweep's name as `cnnclf configs` lists it, "
                        "e.g. sweeps/digits_report_ablations (or digits_report_ablations)")
    parser.add_argument("--out", help="folder for the runs and tables (default: runs/sweeps/<sweep name>)")
    parser.add_argument("--retry-failed", action="store_true", help="run the runs that failed last time again")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    options = parser.parse_args(args)
    try:
        with one_line_errors("cnnclf-sweep"):
            results = run_sweep(options.sweep_file, options.out, options.retry_failed, options.dry_run)
    except KeyboardInterrupt:
        sys.exit("\ncnnclf-sweep: interrupted; run the same command again to continue where it stopped")
    failed = [result.name for result in results if result.status != "ok"]
    if failed:
        sys.exit(f"cnnclf-sweep: {len(failed)} run(s) failed: {', '.join(failed)} (--retry-failed runs them again)")
