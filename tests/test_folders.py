"""Image folders as a dataset, and predict's rule for unreadable files, on small folders of real image files."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnclf.cli import cli_main
from cnnclf.data import ImageFolderDataModule
from cnnclf.data.folders import natural_key
from cnnclf.data.image_files import decode, expand_patterns
from cnnclf.errors import ConfigError, DatasetError

QUIET = ["--trainer.enable_progress_bar", "false", "--model_summary.max_depth", "0"]


def write_images(folder: Path, count: int, level: int, size=(12, 10), mode="L", suffix=".png", seed=0) -> None:
    """``count`` images of one brightness ``level`` (so tiny models learn them) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + level)
    for index in range(count):
        pixels = np.clip(rng.normal(level, 15, (*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).convert(mode).save(folder / f"{index + 1}{suffix}")


@pytest.fixture
def split_folder(tmp_path) -> Path:
    root = tmp_path / "faces"
    for position, name in enumerate(["s1", "s2", "s10"]):
        write_images(root / "train" / name, 8, 40 + 80 * position)
        write_images(root / "test" / name, 3, 40 + 80 * position, seed=1)
    (root / "train" / "s1" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "s2" / "notes.txt").write_text("not an image")
    return root


def fit(root: Path, runs: Path, *extra: str):
    return cli_main(["fit", "--data.root", str(root), "--model", "ConvBNNet", "--model.widths", "[8, 16]",
                     "--data.batch_size", "8", "--trainer.max_epochs", "2", "--trainer.logger.init_args.save_dir",
                     str(runs), "--trainer.default_root_dir", str(runs), *QUIET, *extra])


def test_a_double_star_pattern_takes_every_file_below_once_and_a_folder_of_folders_says_so(tmp_path):
    write_images(tmp_path / "photos" / "cat", 2, 50)
    write_images(tmp_path / "photos" / "cat" / "old", 1, 50)
    paths, _ = expand_patterns([str(tmp_path / "photos" / "**")])
    assert [path.relative_to(tmp_path).as_posix() for path in paths] == [
        "photos/cat/1.png", "photos/cat/2.png", "photos/cat/old/1.png"]
    with pytest.raises(DatasetError, match=r"photos: no image files in it, only folders: '.*photos/\*\*' \(quoted\) "
                                           r"takes every image below it; --data.root .*photos with --ckpt_path"):
        expand_patterns([str(tmp_path / "photos")])


def test_natural_order_of_class_folders():
    assert sorted(["s10", "s2", "s1", "S3"], key=natural_key) == ["s1", "s2", "S3", "s10"]


def test_split_layout_names_classes_by_folder_and_counts_what_it_skips(split_folder, capsys):
    data = ImageFolderDataModule(str(split_folder), val_split=0.25, cache=False)
    assert data.class_names == ["s1", "s2", "s10"] and data.num_classes == 3
    assert data.image_shape == [1, 12, 10]  # every image gray: one channel
    assert [len(data.data.train[1]), len(data.data.val[1]), len(data.data.test[1])] == [18, 6, 9]
    assert data.data.train[0].dtype.is_floating_point is False
    assert ("faces: 33 images in 3 classes (train 24, test 9); skipped 1 hidden, 1 not an image"
            in capsys.readouterr().err)


def test_images_of_one_class_are_refused_naming_the_folder(tmp_path, capsys):
    write_images(tmp_path / "lone" / "cat", 4, 90)
    with pytest.raises(DatasetError, match=r"lone: every image is of one class \(cat\); a classifier needs at least"):
        ImageFolderDataModule(str(tmp_path / "lone"), test_split=1, cache=False).setup()
    assert "lone: 4 images in 1 class (train 3, test 1)" in capsys.readouterr().err


def test_a_val_folder_is_the_validation_split(split_folder):
    write_images(split_folder / "val" / "s2", 2, 120)
    data = ImageFolderDataModule(str(split_folder), cache=False)
    assert len(data.data.train[1]) == 24 and data.data.val[1].tolist() == [1, 1]


def test_class_folders_alone_get_a_seeded_test_split_of_each_class(tmp_path, capsys):
    for position, name in enumerate(["a", "b"]):
        write_images(tmp_path / "flat" / name / "nested", 10, 50 + 100 * position)  # subfolders are read too
    def test_targets(seed, split):
        return ImageFolderDataModule(str(tmp_path / "flat"), test_split=split, split_seed=seed, val_split=0,
                                     cache=False).data.test[0]
    assert len(test_targets(1, 2)) == 4  # a count per class
    assert "flat: 20 images in 2 classes (train 16, test 4)" in capsys.readouterr().err
    counts = np.bincount(ImageFolderDataModule(str(tmp_path / "flat"), test_split=0.3, cache=False).data.test[1])
    assert counts.tolist() == [3, 3]
    assert (test_targets(1, 0.3) == test_targets(1, 0.3)).all()
    assert not (test_targets(1, 0.3) == test_targets(2, 0.3)).all()
    with pytest.raises(DatasetError, match="class 'a' has 10 images, too few to hold 10 out"):
        ImageFolderDataModule(str(tmp_path / "flat"), test_split=10, cache=False).setup()
    with pytest.raises(ConfigError, match="test_split must be a fraction in"):
        ImageFolderDataModule(str(tmp_path / "flat"), test_split=-2)


def test_formats_modes_and_sizes_become_one_channel_count_and_size(tmp_path):
    root = tmp_path / "mixed"
    write_images(root / "train" / "x", 2, 60, mode="RGB", suffix=".jpg")
    write_images(root / "train" / "x", 1, 60, mode="P", suffix=".gif", size=(20, 16))
    write_images(root / "train" / "y", 2, 200, mode="RGBA", suffix=".webp")
    write_images(root / "test" / "y", 1, 200, mode="L", suffix=".tiff", size=(6, 5))
    wide = np.full((10, 12), 50000, dtype=np.uint16)  # 16-bit gray
    Image.fromarray(wide).save(root / "test" / "y" / "deep.png")
    with pytest.raises(DatasetError, match=r"images differ in size \(.*1.gif is 20x16, .*1.jpg is 12x10\); "
                                           "set --data.resize"):
        ImageFolderDataModule(str(root), cache=False).setup()
    data = ImageFolderDataModule(str(root), resize=[8, 8], val_split=0, cache=False)
    assert data.image_shape == [3, 8, 8]  # some colour: three channels
    assert data.data.test[0][-1].float().mean().item() == pytest.approx(50000 // 257, abs=1)
    gray = ImageFolderDataModule(str(root), resize=[8, 8], channels=1, val_split=0, cache=False)
    assert gray.image_shape == [1, 8, 8]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("L", (6, 4), 255)
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: to be turned a quarter
    image.save(tmp_path / "turned.jpg", exif=exif)
    assert decode(tmp_path / "turned.jpg", 1).shape == (6, 4, 1)


def test_a_truncated_file_is_one_line_or_skipped_and_listed(split_folder, capsys):
    bad = split_folder / "train" / "s1" / "9.png"
    bad.write_bytes((split_folder / "train" / "s1" / "1.png").read_bytes()[:60])
    with pytest.raises(DatasetError, match=rf"^{bad}: not a readable image: .*; --data.unreadable skip leaves"):
        ImageFolderDataModule(str(split_folder), cache=False).setup()
    data = ImageFolderDataModule(str(split_folder), unreadable="skip", val_split=0, cache=False)
    assert len(data.data.train[1]) == 24
    assert f"skipped 1 hidden, 1 not an image, 1 unreadable: {bad}: not a readable image" in capsys.readouterr().err


def test_links_that_loop_or_leave_the_root_and_fifos_are_refused(split_folder, tmp_path):
    loop = split_folder / "train" / "s1" / "again"
    loop.symlink_to(split_folder / "train" / "s1")
    with pytest.raises(DatasetError, match=f"{loop}: a symbolic link back to .*, a loop"):
        ImageFolderDataModule(str(split_folder), cache=False).setup()
    loop.unlink()
    (tmp_path / "outside.png").write_bytes((split_folder / "train" / "s1" / "1.png").read_bytes())
    (split_folder / "train" / "s1" / "away.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DatasetError, match="away.png: a symbolic link to .*outside.png, outside"):
        ImageFolderDataModule(str(split_folder), cache=False).setup()
    (split_folder / "train" / "s1" / "away.png").unlink()
    os.mkfifo(split_folder / "train" / "s1" / "pipe.png")
    with pytest.raises(DatasetError, match="pipe.png: not a regular file"):
        ImageFolderDataModule(str(split_folder), cache=False).setup()


def test_the_decoded_size_is_checked_against_the_memory_budget_before_decoding(split_folder):
    with pytest.raises(DatasetError, match=r"33 images of 1x12x10 take 0.0 GB decoded, over the memory budget of "
                                           r"0.0 GB; set a smaller --data.resize"):
        ImageFolderDataModule(str(split_folder), memory_budget_gb=1e-6, cache=False).setup()


def test_the_cache_is_used_and_misses_when_a_file_is_added_changed_or_renamed(split_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNCLF_CACHE_DIR", str(tmp_path / "cache"))

    def loaded():
        data = ImageFolderDataModule(str(split_folder), val_split=0)
        return len(data.data.train[1]), data.data.train[0][0].sum().item()

    first = loaded()
    entries = list((tmp_path / "cache").glob("*.npz"))
    assert loaded() == first and len(entries) == 1
    write_images(split_folder / "train" / "s1", 9, 250)  # 1.png..8.png rewritten, 9.png added
    assert loaded()[0] == 25 and loaded()[1] != first[1]
    (split_folder / "train" / "s1" / "9.png").rename(split_folder / "train" / "s2" / "9.png")
    data = ImageFolderDataModule(str(split_folder), val_split=0)
    assert np.bincount(data.data.train[1]).tolist() == [8, 9, 8]
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # stale entries removed


def test_a_forged_cache_entry_that_would_allocate_gigabytes_is_a_miss(split_folder, tmp_path, monkeypatch):
    import tracemalloc
    import zipfile

    monkeypatch.setenv("CNNCLF_CACHE_DIR", str(tmp_path / "cache"))
    expected = ImageFolderDataModule(str(split_folder), val_split=0).data.train[0]
    [entry] = (tmp_path / "cache").glob("*.npz")
    with np.load(entry) as stored:
        reasons = stored["reasons"]
    with zipfile.ZipFile(entry, "w") as archive:  # an images header of 10 GB over a few bytes
        with archive.open("images.npy", "w") as stream:
            np.lib.format.write_array_header_1_0(stream, {"descr": "|u1", "fortran_order": False,
                                                          "shape": (10**10 // 120, 12, 10, 1)})
            stream.write(bytes(120))
        with archive.open("reasons.npy", "w") as stream:
            np.lib.format.write_array(stream, reasons)
    tracemalloc.start()  # numpy reports its allocations to it
    try:
        again = ImageFolderDataModule(str(split_folder), val_split=0).data.train[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10**9 and np.array_equal(again.numpy(), expected.numpy())  # decoded afresh


def test_fit_test_and_predict_from_the_checkpoint_alone(split_folder, tmp_path, monkeypatch):
    fitted = fit(split_folder, tmp_path / "runs", "--test_after_fit", "true")
    run_dir = Path(fitted.trainer.log_dir)
    assert "s10" in (run_dir / "test" / "summary.txt").read_text()
    monkeypatch.chdir(tmp_path)  # no config: the checkpoint says everything
    best = str(run_dir / "checkpoints" / "best.ckpt")
    tested = cli_main(["test", "--ckpt_path", best, "--data.root", str(split_folder), *QUIET])
    assert tested.datamodule.class_names == ["s1", "s2", "s10"]
    assert tested.trainer.callback_metrics["test/acc"] == fitted.trainer.callback_metrics["test/acc"]
    other = tmp_path / "other"
    write_images(other / "s2", 2, 120)
    cli_main(["test", "--ckpt_path", best, "--data.root", str(other), "--data.test_split", "all", *QUIET])
    (beside,) = run_dir.glob("test-other-*")  # the run's own test/ stays
    assert '"images": 2' in (beside / "summary.json").read_text()
    cli_main(["predict", "--ckpt_path", best, "--data.predict_files", str(split_folder / "test" / "s10"), *QUIET])
    with (run_dir / "predictions.csv").open() as stream:
        assert [row["label"] for row in csv.DictReader(stream)] == ["s10"] * 3
    cli_main(["predict", "--ckpt_path", best, "--data.root", str(split_folder), *QUIET])
    with (run_dir / "predictions.csv").open() as stream:
        folders = [Path(row["source"]).parent.name for row in csv.DictReader(stream)]
    assert folders == ["s1"] * 3 + ["s2"] * 3 + ["s10"] * 3


def test_class_folders_named_with_commas_or_formulas_are_written_safely_and_compared(tmp_path, capsys):
    """per_image.csv (which `cnnclf compare` reads back) quotes a comma and neutralizes a formula, as predictions.csv
    does."""
    root = tmp_path / "odd"
    names = ["=HYPERLINK(\"x\")", 'a,b "c"']
    for position, name in enumerate(names):
        write_images(root / "train" / name, 6, 40 + 160 * position)
        write_images(root / "test" / name, 2, 40 + 160 * position, seed=1)
    run_dir = Path(fit(root, tmp_path / "runs", "--test_after_fit", "true").trainer.log_dir)
    with (run_dir / "test" / "per_image.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert sorted(row["true"] for row in rows) == sorted(["'" + names[0], names[1]] * 2)
    assert all(Path(row["source"]).is_file() and Path(row["source"]).parents[1] == root / "test" for row in rows)
    assert {Path(row["source"]).parent.name for row in rows} == set(names)  # each image's file, to look at
    cli_main(["compare", str(run_dir), str(run_dir)])
    assert "the same 4 test images" in capsys.readouterr().out
    cli_main(["report", str(run_dir), "--output", str(tmp_path / "report")])
    assert f"Source: `{root.resolve()}`, a folder of image files" in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.parametrize(("change", "message"), [
    (lambda root: write_images(root / "zebra", 2, 90),
     r"class folder 'zebra' is not one of the checkpoint's 3 classes \(s1, s2, s10\); give --ckpt_path a checkpoint "
     "trained on these class folders"),
    (lambda root: write_images(root / "s1", 2, 90, mode="RGB", suffix=".jpg", size=(12, 10)),
     r"its images read as 3x12x10 \(C, H, W\), the checkpoint's model takes 1x12x10; set --data.channels 1"),
])
def test_a_folder_that_differs_from_the_checkpoint_is_one_line(split_folder, tmp_path, change, message, capsys):
    fitted = fit(split_folder, tmp_path / "runs")
    other = tmp_path / "other"
    change(other)
    with pytest.raises(SystemExit, match=message):
        cli_main(["test", "--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path, "--data.root",
                  str(other), "--data.test_split", "all", *QUIET])


def test_testing_a_folder_trained_run_on_another_folder_never_replaces_its_results(split_folder, tmp_path):
    fitted = fit(split_folder, tmp_path / "runs", "--test_after_fit", "true")
    run_dir = Path(fitted.trainer.log_dir)
    own = (run_dir / "test" / "summary.json").read_bytes()
    for level, name in enumerate(["s1", "s2", "s10"]):
        write_images(tmp_path / "other" / name, 2, 60 * level)
    cli_main(["test", "--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path, "--data.root",
              str(tmp_path / "other"), "--data.test_split", "all", *QUIET])
    assert (run_dir / "test" / "summary.json").read_bytes() == own
    (beside,) = run_dir.glob("test-other-*")
    assert json.loads((beside / "summary.json").read_text())["images"] == 6


def test_the_advice_for_a_folder_of_other_sizes_is_taken_as_written(split_folder, tmp_path):
    fitted = fit(split_folder, tmp_path / "runs")
    for level, name in enumerate(["s1", "s2", "s10"]):
        write_images(tmp_path / "other" / name, 2, 60 * level, mode="RGB", size=(14, 11))
    command = ["test", "--ckpt_path", fitted.trainer.checkpoint_callback.best_model_path, "--data.root",
               str(tmp_path / "other"), "--data.test_split", "all", *QUIET]
    with pytest.raises(SystemExit) as refused:
        cli_main(command)
    advice = str(refused.value.code).rpartition("; set ")[2]
    assert advice == "--data.channels 1 --data.resize [12,10]"
    assert "test/acc" in cli_main(command + advice.split()).trainer.callback_metrics


def test_a_recipe_runs_on_folders_with_its_batches_and_augmentation(split_folder, tmp_path):
    cli = cli_main(["fit", "--config", "orl_best", "--data.root", str(split_folder), "--data.resize", "[32, 32]",
                    "--trainer.fast_dev_run", "true", *QUIET])
    data = cli.datamodule
    assert isinstance(data, ImageFolderDataModule)
    assert (data.batch_size, data.translate, data.hflip, data.channels) == (36, 5, True, 1)


def test_predict_skips_and_lists_unreadable_files_unless_told_to_stop(split_folder, tmp_path, capsys):
    fitted = fit(split_folder, tmp_path / "runs")
    photos = tmp_path / "photos"
    write_images(photos, 2, 40)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (photos / "notes.txt").write_text("a note")
    output = tmp_path / "out.csv"
    best = fitted.trainer.checkpoint_callback.best_model_path
    cli_main(["predict", "--ckpt_path", best, "--data.predict_files", str(photos), "--prediction_csv.output",
              str(output), *QUIET])
    assert f"Wrote 2 predictions to {output}; skipped 2 files, listed in {tmp_path / 'out_skipped.csv'}" in (
        capsys.readouterr().out)
    with (tmp_path / "out_skipped.csv").open() as stream:
        listed = {Path(row["source"]).name: row["reason"] for row in csv.DictReader(stream)}
    assert listed.keys() == {"broken.jpg", "notes.txt"} and listed["broken.jpg"].startswith("not a readable image")
    with pytest.raises(SystemExit, match=f"{photos / 'broken.jpg'}: not a readable image"):
        cli_main(["predict", "--ckpt_path", best, "--data.predict_files", str(photos), "--data.unreadable", "error",
                  *QUIET])
    assert "Restoring states" not in capsys.readouterr().out  # the error comes before the checkpoint loads
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty: a folder with no image files"):
        cli_main(["predict", "--ckpt_path", best, "--data.predict_files", str(tmp_path / "empty"), *QUIET])
    with pytest.raises(SystemExit, match=f"^cnnclf: error: {tmp_path / 'nothere'}: no such file or folder$"):
        cli_main(["predict", "--ckpt_path", best, "--data.predict_files", str(tmp_path / "nothere"), *QUIET])
