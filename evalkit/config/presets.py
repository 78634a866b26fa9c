"""Model presets by name (conf/model/NAME.yaml), for code that takes a model named on the command line as a string."""

from __future__ import annotations

from omegaconf import OmegaConf

from evalkit.config import CONF_DIR

MODEL_PRESETS = CONF_DIR / "model"


def model_spec(name_or_path: str) -> dict:
    """A preset's spec when `name_or_path` names one, else a spec loading `name_or_path` (hub id or local path)."""
    preset = MODEL_PRESETS / f"{name_or_path}.yaml"
    if preset.is_file():
        return OmegaConf.to_container(preset_config(name_or_path), resolve=True)
    return {"name": str(name_or_path), "name_or_path": str(name_or_path)}


def preset_config(name: str):
    """A preset's YAML with the presets its `defaults` extends merged under it, as Hydra composes it (an alias
    such as smollm2-135m is one line of defaults)."""
    config = OmegaConf.load(MODEL_PRESETS / f"{name}.yaml")
    extended = [preset_config(parent) for parent in config.pop("defaults", [])]
    return OmegaConf.merge(*extended, config)
