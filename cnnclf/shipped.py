"""The configs that ship with cnnclf, by name: ``digits``, ``presets/gpu``, ``sweeps/digits_report_ablations``.

They are the repository's ``configs/`` folder, which a wheel installs inside the package
(``cnnclf/configs``), so the documented commands work from any folder.
"""

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
    """Every shipped config's name and purpose (the first line of its leading comment)."""
    folder = configs_folder()
    return {str(path.relative_to(folder)).removesuffix(SUFFIX): purpose(path)
            for path in sorted(folder.rglob("*" + SUFFIX))}


def purpose(path: Path) -> str:
    first = path.read_text(encoding="utf-8").partition("\n")[0]
    return first.removeprefix("#").strip() if first.startswith("#") else ""


def print_shipped_configs(args: list[str]) -> None:
    """``cnnclf configs`` (it reads no arguments)."""
    configs = shipped_configs()
    width = max(map(len, configs))
    print(f"Configs shipped with cnnclf ({configs_folder()}); pass one by name, e.g. --config digits:")
    for name, text in configs.items():
        print(f"  {name:<{width}}  {text}")

