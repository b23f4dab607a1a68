"""Decode throughput of an image folder: cnnclf's first and cached load against a plain Pillow loop and the pickle.

    python bench/export_folders.py --only cifar10      # once: data/folders/cifar10
    python bench/decode_folders.py [--root data/folders/cifar10] [--pickle /work/main/data/seed/CIFAR] [--repeats 3]

Each measurement runs in a fresh process (the OS file cache is warm, nothing else is shared) and
reports images/s, wall and CPU seconds and peak resident memory: the plain loop
(``np.asarray(PIL.Image.open(f).convert("RGB"))`` over the same files, one thread), the data module's
first load (empty cache folder: listing, headers, decoding), its cached load, and the pickle's cached
load. Medians of the repeats; on a shared machine the CPU seconds vary less than the wall time.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import machine_description

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import glob, json, resource, sys, time
kind, source, cache = sys.argv[1:]
import os; os.environ["CNNCLF_CACHE_DIR"] = cache
import numpy as np
from PIL import Image
from cnnclf.data import ImageFolderDataModule, PickledImageDataModule
start, cpu = time.perf_counter(), time.process_time()
if kind == "plain":
    files = sorted(glob.glob(f"{source}/*/*/*"))
    count = len([np.asarray(Image.open(file).convert("RGB")) for file in files])
else:
    data = (ImageFolderDataModule(source, val_split=0) if kind.startswith("folder")
            else PickledImageDataModule(source, val_split=0))
    count = len(data.data.train[1]) + len(data.data.test[1])
print(json.dumps({"images": count, "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(kind: str, source: str, cache: str) -> dict:
    child = subprocess.run([sys.executable, "-c", CHILD, kind, source, cache], capture_output=True, text=True,
                           check=True, cwd=ROOT)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(ROOT / "data" / "folders" / "cifar10"))
    parser.add_argument("--pickle", default="/work/main/data/seed/CIFAR")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine_description())
    with tempfile.TemporaryDirectory() as cache:
        measure("pickle", args.pickle, cache)  # fills the pickle's cache entry
        runs = {kind: [] for kind in ("plain", "folder first", "folder cached", "pickle cached")}
        for _ in range(args.repeats):
            for entry in Path(cache).glob("folder-*"):
                entry.unlink()
            runs["plain"].append(measure("plain", args.root, cache))
            runs["folder first"].append(measure("folder", args.root, cache))
            runs["folder cached"].append(measure("folder", args.root, cache))
            runs["pickle cached"].append(measure("pickle", args.pickle, cache))
    print("| load | images | images/s | wall s | CPU s | peak MB |\n| --- | --- | --- | --- | --- | --- |")
    for kind, results in runs.items():
        wall = statistics.median(result["wall_s"] for result in results)
        print(f"| {kind} | {results[0]['images']:,} | {results[0]['images'] / wall:,.0f} | {wall:.1f} | "
              f"{statistics.median(result['cpu_s'] for result in results):.1f} | "
              f"{statistics.median(result['peak_rss_mb'] for result in results):.0f} |")


if __name__ == "__main__":
    main()
