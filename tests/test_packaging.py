"""The wheel, installed without -e and without its extras into a fresh environment, runs from a folder outside the
repo: its configs and tasks ship inside it, and no command that needs no extra imports one."""

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import ROOT, SHARED_DATA

EXTRAS = ("jiwer", "soundfile", "_soundfile", "soxr", "whisper_normalizer", "torchao")  # pyproject's [asr], [quant]


def core_dependencies(folder: Path) -> Path:
    """This interpreter's site-packages as links, less the extras' packages (modules and metadata)."""
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.split("-")[0].split(".")[0].lower() not in EXTRAS:
            (folder / entry.name).symlink_to(entry)
    return folder


def test_wheel_installs_and_evaluates_outside_the_repo(tmp_path, tiny_gpt2_dir):
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # a copy: setuptools builds inside the source tree
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "build", "*.egg-info", "__pycache__", ".pytest_cache", "benchmarks", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("evalkit-*.whl")
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # evalkit's core dependencies from this interpreter's site-packages, after the fresh one (its editable evalkit
    # finder is a .pth file there, which a path line does not run), without the extras' packages: `pip install
    # evalkit` alone must run every command that needs none of them
    (Path(site) / "dependencies.pth").write_text(str(core_dependencies(tmp_path / "core")))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([str(python), "-c", "import evalkit, importlib.util; print(evalkit.__file__); "
                            "print([importlib.util.find_spec(name) for name in ('jiwer', 'torchao')])"], cwd=outside,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(site) and where.endswith("[None, None]\n")  # the installed copy alone, no extras
    command = env / "bin" / "evalkit"
    help_text = subprocess.run([str(command), "--help"], cwd=outside, capture_output=True, text=True)
    assert help_text.returncode == 0 and "smollm2-135m" in help_text.stdout and "wikitext" in help_text.stdout
    done = subprocess.run([str(command), f"model.name_or_path={tiny_gpt2_dir}", f"data_dir={SHARED_DATA}", "limit=300",
                           "max_length=64", "stride=32", "cache_dir=null", "hydra.run.dir=run"], cwd=outside,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((outside / "run" / "results.json").read_text())["metrics"]
    assert metrics["tokens_scored"] == 299
    # the leaderboard's page inlines its stylesheet and script, which the wheel carries as package data
    board = subprocess.run([str(env / "bin" / "evalkit-leaderboard"), "run", "-o", "board"], cwd=outside,
                           capture_output=True, text=True)
    assert board.returncode == 0, board.stderr
    page = (outside / "board" / "index.html").read_text()
    assert "body { font:" in page and 'addEventListener("change", render)' in page
