"""The shipped configs: by name from the CLI and the sweep runner, listed by ``cnnclf configs``, inside the wheel."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cnnclf.argv import prepared_arguments
from cnnclf.cli import cli_main
from cnnclf.errors import ConfigError
from cnnclf.sweeps.spec import load_sweep
from tests.conftest import CONFIGS

ROOT = CONFIGS.parent
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def test_a_config_name_resolves_to_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty folder: no configs/ here
    args = prepared_arguments(["fit", "--config", "cifar_best", "--config=presets/gpu", "-c", "configs/digits.yaml"])
    assert args == ["fit", "--config", str(CONFIGS / "cifar_best.yaml"), f"--config={CONFIGS / 'presets/gpu.yaml'}",
                    "-c", str(CONFIGS / "digits.yaml")]
    with pytest.raises(ConfigError, match="--config nosuch: no such file, nor a config shipped"):
        prepared_arguments(["fit", "--config", "nosuch"])


def test_a_file_in_the_working_folder_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("digits").write_text("trainer:\n  max_epochs: 1\n")
    assert prepared_arguments(["fit", "--config", "digits"])[2] == "digits"


def test_a_shipped_sweep_by_name_finds_its_base_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("digits_report_ablations")
    assert sweep.base == [(CONFIGS / "digits.yaml").resolve()]
    assert len(sweep.runs()) == 8


def test_cnnclf_configs_lists_every_shipped_config_with_its_purpose(capsys):
    cli_main(["configs"])
    listing = capsys.readouterr().out.splitlines()[1:]
    names = [str(path.relative_to(CONFIGS).with_suffix("")) for path in SHIPPED]
    assert [line.split()[0] for line in listing] == names
    for line, path in zip(listing, SHIPPED, strict=True):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 20, path  # a real one-line purpose
        assert line.endswith(first.removeprefix("# "))


@pytest.mark.parametrize("path", SHIPPED, ids=[str(path.relative_to(CONFIGS)) for path in SHIPPED])
def test_a_configs_second_comment_line_does_not_restate_its_purpose(path):
    first, second = path.read_text().splitlines()[:2]
    opening = second.partition(":")[0]
    assert not (second.startswith("# ") and first.startswith(opening)), f"{path}: '{opening}' restates line 1"


def test_cnnclf_help_mentions_the_configs_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code in (None, 0)
    printed = " ".join(capsys.readouterr().out.split())  # the help formatter wraps lines anywhere
    assert "configs List the configs shipped with cnnclf" in printed
    assert "{configs,compare,report,fit,validate,test,predict}" in printed


def test_the_wheel_holds_the_package_its_configs_and_the_license(tmp_path):
    """In the default suite (5 s): pyproject lists the packages by name, and a new one left out
    installs a wheel that cannot import."""
    source = tmp_path / "source"  # a copy: a build/ folder left in the checkout would hide a missing package
    for folder in ("cnnclf", "configs"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True)
    (wheel,) = tmp_path.glob("cnnclf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in SHIPPED:
        assert f"cnnclf/configs/{path.relative_to(CONFIGS)}" in names, path
    for path in (ROOT / "cnnclf").rglob("*.py"):
        assert str(path.relative_to(ROOT)) in names, path
    assert any(name.endswith("licenses/LICENSE") for name in names)
