"""Configuration, torch-free: composing Hydra configs, typed settings, checks, model presets."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # config.yaml, model/, task/: package data


def packaged(group: str) -> dict[str, Path]:
    """The packaged configs of a group (model, task): name -> YAML file, by name."""
    return {path.stem: path for path in sorted((CONF_DIR / group).glob("*.yaml"))}
