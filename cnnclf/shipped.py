"""The configs that ship with cnnclf, by name: ``digits``, ``presets/gpu``, ``sweeps/digits_report_ablations``:
the repository's ``configs/``, which a wheel installs as ``cnnclf/configs`` so that names work from any folder."""

from pathlib import Path

SUFFIX = ".yaml"


def configs_folder() -> Path:
    package = Path(__file__).resolve().parent
    installed = package / "configs"  # from a wheel
    return installed if installed.is_dir() else package.parent / "configs"  # a checkout or an editable install


def shipped_config(name: str) -> Path | None:
    """The shipped config ``name`` (``.yaml`` and a leading ``configs/`` optional), if there is one."""
    name = name.removeprefix("configs/")
    path = configs_folder() / (name if name.endswith(SUFFIX) else name + SUFFIX)
    return path if path.is_file() else None


def shipped_configs() -> dict[str, str]:
    """Every shipped config's name and purpose (its first line, when that is a comment)."""
    folder = configs_folder()
    firsts = {str(path.relative_to(folder)).removesuffix(SUFFIX): path.read_text(encoding="utf-8").partition("\n")[0]
              for path in sorted(folder.rglob("*" + SUFFIX))}
    return {name: first.removeprefix("#").strip() if first.startswith("#") else "" for name, first in firsts.items()}


def print_shipped_configs(args: list[str]) -> None:
    """``cnnclf configs`` (it reads no arguments)."""
    configs = shipped_configs()
    width = max(map(len, configs))
    print(f"Configs shipped with cnnclf ({configs_folder()}); pass one by name, e.g. --config digits:")
    for name, text in configs.items():
        print(f"  {name:<{width}}  {text}")

