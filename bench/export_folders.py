"""Write the shared CIFAR-10 and ORL copies as folders of image files, as users' own images arrive.

    python bench/export_folders.py [--out data/folders] [--only cifar10 orl]

- ``cifar10/train/<class>/00001.jpg`` and ``cifar10/test/<class>/...``: the copy's bytes are JPEG
  already and are written unchanged (60,000 files).
- ``orl/s1/1.pgm .. s40/10.pgm``: the database's own layout; image 10 of each person is the report's
  test image (the pickle's test split), 1..9 its training images.
- ``orl_split/train/s<N>/1..9.pgm`` and ``orl_split/test/s<N>/10.pgm``: the same files in the report's
  split, to compare with the pickle on the same test images.

``data/`` is git-ignored; nothing here is committed.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def export_cifar(out: Path) -> None:
    copy = np.load(SHARED / "cifar10_jpeg.npz")
    for split in ("train", "test"):
        data, offsets, labels = copy[f"jpeg_{split}"], copy[f"offsets_{split}"], copy[f"y_{split}"]
        for index, (start, end, label) in enumerate(zip(offsets[:-1], offsets[1:], labels, strict=True), 1):
            path = out / split / CIFAR_CLASSES[label] / f"{index:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[start:end].tobytes())
        print(f"{out / split}: {len(labels)} JPEG files")


def export_orl(out: Path, split_out: Path) -> None:
    copy = np.load(SHARED / "orl.npz")
    numbered = {}  # person -> the next image number; the training images first, then the test image
    for split in ("train", "test"):
        for image, person in zip(copy[f"x_{split}"], copy[f"y_{split}"], strict=True):
            number = numbered[person] = numbered.get(person, 0) + 1
            for path in (out / f"s{person}" / f"{number}.pgm", split_out / split / f"s{person}" / f"{number}.pgm"):
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
    print(f"{out}, {split_out}: {sum(numbered.values())} PGM files of {len(numbered)} people")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "folders")
    parser.add_argument("--only", nargs="+", choices=["cifar10", "orl"], default=["cifar10", "orl"])
    args = parser.parse_args()
    if "cifar10" in args.only:
        export_cifar(args.out / "cifar10")
    if "orl" in args.only:
        export_orl(args.out / "orl", args.out / "orl_split")


if __name__ == "__main__":
    main()
