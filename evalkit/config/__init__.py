"""Configuration, torch-free: composing Hydra configs, typed settings, checks, model presets."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # config.yaml, model/, task/: package data
