"""The GPU scripts run their whole path on the CPU: the GPU check and the profiler in their dry mode, the sync
finder on tiny data."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_dry_run_prints_a_row_per_run_and_the_seed_summary(capsys):
    gpu_check = load_bench_script("gpu_check")
    gpu_check.main(["--dry-run", "--only", "cifar_best", "orl_best", "cifar", "--seeds", "2",
                    "--seed-variants", "", "--data.translate 1"])
    printed = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in printed.splitlines()
            if line.startswith("| ") and " | off | " in line}
    for name in ("cifar_best", "orl_best", "cifar"):
        epochs, fit_seconds, accuracy = rows[name][2:5]
        assert float(epochs) == 1.0 and float(fit_seconds) > 0 and accuracy.endswith("%"), rows[name]
        cnnclf_seconds, bare_seconds, plain_seconds = (float(value) for value in rows[name][5:8])
        assert min(cnnclf_seconds, bare_seconds, plain_seconds) > 0, rows[name]
        assert float(rows[name][-1].rstrip("x |")) > 0
    assert "| cifar_best | 2 |" in printed and "| cifar_best --data.translate 1 | 2 |" in printed
    assert "skipped" not in printed


def test_gpu_syncs_counts_the_waits_of_a_short_fit_beside_its_steps(tmp_path, capsys):
    gpu_check, gpu_syncs = load_bench_script("gpu_check"), load_bench_script("gpu_syncs")
    data = gpu_check.write_tiny_data(tmp_path)
    gpu_syncs.main(["cifar_best", "--data", str(data), "--epochs", "1", "--runs", str(tmp_path / "runs"),
                    *gpu_check.DRY_RUN_ARGS])
    printed = capsys.readouterr().out
    assert "cifar_best: 1 training steps, 0 waits for the GPU" in printed  # 120 images, batch 1024; no GPU
    assert "| waits | where (innermost first) |" in printed


def test_profile_fit_dry_run_prints_the_fit_and_the_plain_loop_profiled(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # it imports gpu_check, as when run as a script
    load_bench_script("profile_fit").main(["cifar_best", "--dry-run", "--top", "3"])
    printed = capsys.readouterr().out
    assert "## cifar_best: 1 steps; fit " in printed and "plain loop" in printed
    for title in ("cnnclf's Trainer.fit, profiled", "the plain loop, profiled"):
        table = printed.split(f"### cifar_best: {title}")[1].strip().split("\n\n")[0].splitlines()
        assert table[0] == "| own ms | with callees ms | calls | function |" and len(table) == 2 + 3, table
