"""The import contract: the command line's checks, the configs, the leaderboard, the data and metrics code and the
evaluators' catalogue import without torch or transformers, so a bad setting fails in a second and a leaderboard
builds without them. Every module of evalkit is found on disk (a new one is covered at once); only those HEAVY names
may import torch or transformers at module level."""

import fnmatch
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

LIBRARIES = ["torch", "transformers"]
HEAVY = [  # the modules that import torch or transformers at module level today (fnmatch patterns)
    "evalkit.scoring", "evalkit.scoring.*",  # the NLL and choice scoring
    "evalkit.job.runner", "evalkit.job.batching", "evalkit.job.distributed", "evalkit.job.compile_choice",
    "evalkit.job.cache",  # through job.distributed
    "evalkit.evaluators.*.methods", "evalkit.evaluators.asr.transcriber",  # the evaluators' model side
    "evalkit.loading.compiling", "evalkit.loading.ctranslate2", "evalkit.loading.fingerprints",
    "evalkit.loading.fusions", "evalkit.loading.gguf_cache", "evalkit.loading.kernels", "evalkit.loading.loaded",
    "evalkit.loading.loader", "evalkit.loading.pool", "evalkit.loading.sources",
]

# Imports the named modules in one fresh interpreter where torch and transformers are found but cannot load: importing
# one raises Heavy and notes the evalkit lines on the way, so every offender is found without loading torch once.
PROBE = """
import importlib, importlib.abc, importlib.machinery, json, sys, traceback
libraries, names, root = json.loads(sys.argv[1])
attempts = []

class Heavy(Exception):  # not an ImportError: a module's `except ImportError` fallback must not hide the import
    pass

class Refuse(importlib.abc.Loader):
    def create_module(self, spec):
        attempts.append((spec.name, [f"{frame.filename[len(root) + 1:]}:{frame.lineno}"
                                     for frame in traceback.extract_stack() if frame.filename.startswith(root)]))
        raise Heavy(spec.name)

    def exec_module(self, module):
        pass

class Find(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in libraries:  # found (find_spec answers as usual), never loaded
            return importlib.machinery.ModuleSpec(name, Refuse())
        return None

sys.meta_path.insert(0, Find())
found = {}
for name in names:
    attempts.clear()
    try:
        module = importlib.import_module(name)
        assert module.__file__.startswith(root), (module.__file__, root)  # the tree walked, not an installed copy
    except Heavy:
        pass
    if attempts:
        found[name] = dict(reversed(attempts))  # per library, the first chain that reached it
print(json.dumps(found))
"""


def modules(package: Path, name: str = "evalkit") -> list[str]:
    """The package and every module under it, found by pkgutil on disk (nothing imported); __main__ modules are left
    out (importing one runs the command)."""
    found = [name]
    for module in pkgutil.iter_modules([str(package)]):
        if module.ispkg:
            found += modules(package / module.name, f"{name}.{module.name}")
        elif module.name != "__main__":
            found.append(f"{name}.{module.name}")
    return found


def light(name: str) -> bool:
    return not any(fnmatch.fnmatchcase(name, pattern) for pattern in HEAVY)


def heavy_imports(root: Path) -> dict[str, dict[str, list[str]]]:
    """{module: {library: the evalkit lines that led to importing it}} for each module of the evalkit tree under
    `root`, outside HEAVY, whose import reaches torch or transformers."""
    names = [name for name in modules(root / "evalkit") if light(name)]
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([LIBRARIES, names, str(root)])], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_torch_free_modules_import_without_torch_or_transformers():
    checked = [name for name in modules(ROOT / "evalkit") if light(name)]
    for expected in ("evalkit.cli.command", "evalkit.config.compose", "evalkit.leaderboard.build", "evalkit.metrics",
                     "evalkit.evaluators.perplexity", "evalkit.evaluators.base", "evalkit.loading.options"):
        assert expected in checked  # the walk finds them
    found = [f"{name}: {library} via {' -> '.join(chain)}"
             for name, libraries in heavy_imports(ROOT).items() for library, chain in libraries.items()]
    assert not found, "\n".join(["torch-free modules import torch or transformers (or belong in HEAVY):", *found])


def test_the_check_catches_a_module_level_import_of_torch(tmp_path):
    """A copy of the tree with `import torch` added to the leaderboard's build module: the check names the module
    whose import brought torch in and the added line."""
    shutil.copytree(ROOT / "evalkit", tmp_path / "evalkit", ignore=shutil.ignore_patterns("__pycache__"))
    build = tmp_path / "evalkit" / "leaderboard" / "build.py"
    build.write_text(build.read_text() + "\nimport torch  # noqa: E402\n")
    added = f"evalkit/leaderboard/build.py:{len(build.read_text().splitlines())}"
    found = heavy_imports(tmp_path)
    assert "evalkit.leaderboard.build" in found or "evalkit.leaderboard" in found, found
    assert all(chains["torch"][-1] == added for chains in found.values()), found
