"""Load time and peak memory for the course-format MNIST pickle (int64 images, about 444 MB).

Each repeat runs in a fresh process, so the OS file cache is warm but nothing else is shared:
it times the imports, then the load + tensors + normalization statistics + the first training
batch ("ready to train") in wall-clock and in CPU seconds (steadier when other processes share
the cores), and reads the process's peak resident memory. Each repeat measures a
first load (safe unpickling and validation, ``--data.cache false``) and a repeat load (from
cnnclf's dataset cache, in a temporary cache folder filled once before the repeats).

    python bench/load_mnist.py [--pickle data/seed-int64/MNIST] [--repeats 3]

Writes the pickle with ../shared/data/make_seed_pickles.py first if it is missing.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import machine_description

ROOT = Path(__file__).resolve().parents[1]
MAKE_PICKLES = ROOT.parent / "shared" / "data" / "make_seed_pickles.py"

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from cnnclf.data import MNISTDataModule
imported, imported_cpu = time.perf_counter(), time.process_time()
data = MNISTDataModule(sys.argv[1], batch_size=128, cache=sys.argv[2] == "cached")
data.input_mean, next(iter(data.train_dataloader()))
ready, ready_cpu = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": imported - start, "load_s": ready - imported, "load_cpu_s": ready_cpu - imported_cpu,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_images": len(data.data.train[1]), "dtype": str(data.data.train[0].dtype)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pickle", type=Path, default=ROOT / "data" / "seed-int64" / "MNIST")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.pickle.is_file():
        subprocess.run([sys.executable, str(MAKE_PICKLES), str(args.pickle.parent), "--only", "MNIST",
                        "--mnist-dtype", "int64"], check=True)
    environment = {**os.environ, "CNNCLF_CACHE_DIR": tempfile.mkdtemp(prefix="cnnclf-bench-cache-")}

    def measure(mode: str) -> dict:
        output = subprocess.run([sys.executable, "-c", CHILD, str(args.pickle), mode], check=True,
                                capture_output=True, text=True, env=environment).stdout
        return json.loads(output.strip().splitlines()[-1])

    measure("cached")  # fills the cache
    runs = {"first": [], "cached": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(measure(mode))
    size_mb = args.pickle.stat().st_size / 2**20
    print(f"file: {args.pickle} ({size_mb:.0f} MiB), {runs['first'][0]['train_images']} training images kept "
          f"as {runs['first'][0]['dtype']}")
    print(f"machine: {machine_description()}")
    for mode, title in (("first", "first load (unpickle + validate)"), ("cached", "repeat load (dataset cache)")):
        print(title)
        for key, label in (("import_s", "imports (s)"), ("load_s", "load to first batch (s)"),
                           ("load_cpu_s", "  the same in CPU time (s)"), ("peak_rss_mb", "peak resident memory (MiB)")):
            values = [run[key] for run in runs[mode]]
            print(f"  {label:28s} median {statistics.median(values):7.2f}   runs "
                  + " ".join(f"{value:.2f}" for value in values))

if __name__ == "__main__":
    main()
