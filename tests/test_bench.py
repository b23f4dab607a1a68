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


# Stands in for airbench94's script on a CPU: it reads the data where and as airbench94's loader keeps it, and
# prints each run's last row as the script does (| run | epoch | ... | tta_val_acc | total_time_seconds |).
AIRBENCH_STAND_IN = """
import torch

def main(run):
    train, test = (torch.load(f"cifar10/{name}.pt", weights_only=True) for name in ("train", "test"))
    assert train["images"].dtype == torch.uint8 and train["images"].shape[1:] == (32, 32, 3), train["images"].shape
    assert len(train["labels"]) == len(train["images"]) == 120 and len(test["labels"]) == 40
    assert len(train["classes"]) == 10 and 0 <= int(train["labels"].min()) <= int(train["labels"].max()) <= 9
    accuracy = 0.1 if run == "warmup" else 0.9 + run / 100
    print(f"|  {run}  |  eval  |  0.5000  |  {accuracy:.4f}  |  1.5000  |")
"""


def test_gpu_check_dry_run_prints_a_row_per_run_and_the_seed_summary(tmp_path, capsys):
    gpu_check = load_bench_script("gpu_check")
    stand_in = tmp_path / "airbench94.py"
    stand_in.write_text(AIRBENCH_STAND_IN)
    gpu_check.main(["--dry-run", "--only", "cifar_best", "orl_best", "cifar", "--seeds", "2",
                    "--seed-variants", "", "--data.translate 1", "--airbench", str(stand_in)])
    printed = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in printed.splitlines()
            if line.startswith("| ") and " | off | " in line}
    for name in ("cifar_best", "orl_best", "cifar"):
        epochs, fit_seconds, accuracy = rows[name][2:5]
        assert float(epochs) == 1.0 and float(fit_seconds) > 0 and accuracy.endswith("%"), rows[name]
        cnnclf_seconds, bare_seconds, plain_seconds = (float(rows[name][index]) for index in (5, 8, 9))
        assert min(cnnclf_seconds, bare_seconds, plain_seconds) > 0, rows[name]
        assert float(rows[name][11].rstrip("x")) > 0
        # On a CPU the graphed fit is refused in one line, listed below the table; the row keeps its other figures.
        assert rows[name][6:8] == ["-", "-"] and rows[name][-1] == "- |", rows[name]
        assert (f"- {name} graphed: cnnclf: error: --model.cuda_graphs true replays CUDA graphs on one GPU, and "
                "this fit trains on cpu") in printed
    assert "| cifar_best | 2 |" in printed and "| cifar_best --data.translate 1 | 2 |" in printed
    assert "| airbench94's own script (airbench94.py) | 2 | 90.50% | 90.00%, 91.00% | 1.50 |" in printed
    assert "skipped" not in printed


def test_gpu_check_lists_a_failing_airbench_script_and_goes_on(tmp_path, capsys):
    gpu_check = load_bench_script("gpu_check")
    broken = tmp_path / "airbench94.py"
    broken.write_text("import torch\ntorch.zeros(1).cuda()\n")
    gpu_check.main(["--dry-run", "--only", "no-such-row", "--seeds", "0", "--airbench", str(broken)])
    printed = capsys.readouterr().out
    assert f"- {broken}: {broken} exited with 1: " in printed and "airbench94's own script" not in printed
    assert printed.rstrip().endswith("s in all")


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
