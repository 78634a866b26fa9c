"""Model presets by name (conf/model/NAME.yaml), for code that takes a model named on the command line as a string."""

from __future__ import annotations

from omegaconf import OmegaConf

from evalkit.config import CONF_DIR

MODEL_PRESETS = CONF_DIR / "model"


def model_spec(name_or_path: str) -> dict:
    """A preset's spec when `name_or_path` names one, else a spec loading `name_or_path` (hub id or local path)."""
    preset = MODEL_PRESETS / f"{name_or_path}.yaml"
    if preset.is_file():
        return OmegaConf.to_container(OmegaConf.load(preset), resolve=True)
    return {"name": str(name_or_path), "name_or_path": str(name_or_path)}
