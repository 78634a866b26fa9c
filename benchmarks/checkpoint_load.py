"""A saved checkpoint's way to its first batch, on one GPU: Llama-3-8B's shape, random weights saved as safetensors in a
local folder (16 GB), then two fresh `python -m evalkit` runs on it with an empty digest store (the first hashes
the weights, the second finds their digests by path, size and modification time), each split into start-up, setup,
fingerprinting and loading (results.json's timing), against the seconds a plain read of the files takes. The page
cache is emptied first where the machine allows (said in the JSON). Writes JSON.

    python benchmarks/checkpoint_load.py --tokenizer .bench/tokenizer --text .bench/wikitext-2-raw/wiki.test.raw \
        --folder /tmp/ckpt --out X.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from evalkit.config.presets import model_spec
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions

ROOT = Path(__file__).resolve().parents[1]


def save_checkpoint(folder: Path, tokenizer: Path) -> float:
    config = transformers.LlamaConfig(**model_spec("random-llama3-8b")["config"])
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    started = time.perf_counter()
    model.save_pretrained(folder)
    for part in tokenizer.iterdir():
        shutil.copy(part, folder / part.name)
    return time.perf_counter() - started


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def read_seconds(folder: Path) -> float:
    started = time.perf_counter()
    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb", buffering=0) as handle:
            while handle.read(1 << 26):
                pass
    return time.perf_counter() - started


def run_cli(folder: Path, text: str, run_dir: Path, digests: Path) -> dict:
    command = [sys.executable, "-m", "evalkit", f"model.name_or_path={folder}", "task=text", f"task.path={text}",
               "limit=8192", "dtype=bfloat16", "compile=false", "cache_dir=null", f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "EVALKIT_DIGEST_CACHE": str(digests)})
    wall = time.perf_counter() - started
    if done.returncode:
        return {"returncode": done.returncode, "stderr_tail": done.stderr[-2000:]}
    return {"command_wall_seconds": wall, "timing": json.loads((run_dir / "results.json").read_text())["timing"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {"benchmark": "saved 8B checkpoint: fingerprint and load against reading its files",
              "hardware": hardware(), "versions": library_versions(),
              "save_seconds": save_checkpoint(args.folder, args.tokenizer),
              "checkpoint_bytes": sum(p.stat().st_size for p in args.folder.glob("*.safetensors"))}
    torch.cuda.empty_cache()
    report["page_cache_dropped"] = drop_page_cache()
    report["read_seconds_first"] = read_seconds(args.folder)  # cold when the cache was dropped
    report["read_seconds_cached"] = read_seconds(args.folder)
    write_json(args.out, report)
    work = Path(tempfile.mkdtemp(prefix="checkpoint-load-"))
    report["runs"] = []
    for run in (1, 2):  # 1: digests computed (and stored); 2: digests from the store
        if drop_page_cache():
            report.setdefault("runs_start_with_empty_page_cache", True)
        row = run_cli(args.folder, args.text, work / f"run{run}", work / "digests")
        read = report["read_seconds_first"] if report["page_cache_dropped"] else report["read_seconds_cached"]
        if "timing" in row:
            ready = row["timing"]["fingerprint_seconds"] + row["timing"]["load_seconds"]
            row.update(ready_seconds=ready, ready_over_read=ready / read)
        report["runs"].append(row)
        print(json.dumps(row)[:600], flush=True)
        write_json(args.out, report)


if __name__ == "__main__":
    main()
