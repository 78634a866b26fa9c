"""What one command gets on a GPU, per mode: each run is a fresh `python -m evalkit` process (what an evaluation really
is), its wall time split into start-up, setup, load, preparation and evaluation (results.json's timing), with MFU
(model FLOPs over evaluation seconds, against a bfloat16 matmul rate measured here) and the NLL. Modes: eager,
eager with nothing fused, compile=true with an empty compiled-graph cache (cold), then with the cache it filled (warm),
and compile=auto; each mode's runs follow one another, `--repeat` times. Writes JSON after every run.

    python benchmarks/one_command.py --text .bench/wikitext-2-raw/wiki.test.raw --tokenizer .bench/tokenizer \
        --out X.json [--modes eager,compile_cold,compile_warm,auto] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import transformers
from gpu import forward_flops, matmul_tflops  # benchmarks/gpu.py

from evalkit.config.presets import model_spec
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions

ROOT = Path(__file__).resolve().parents[1]
MODES = {"eager": ["compile=false"], "eager_unfused": ["compile=false", "fused_kernels=none"],
         "compile_cold": ["compile=true"], "compile_warm": ["compile=true"], "auto": ["compile=auto"]}


def model_flops(preset: str, tokens: int, max_length: int, stride: int) -> float:
    """The job's matrix FLOPs (benchmarks/gpu.py's count) from the preset's config, on the meta device."""
    spec = model_spec(preset)
    config = transformers.AutoConfig.for_model(spec["architecture"], **spec["config"])
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return forward_flops(model, window_schedule(tokens, max_length, stride))


def run_once(args, mode: str, run_dir: Path, compile_cache: Path, log) -> dict:
    command = [sys.executable, "-m", "evalkit", f"model={args.model}", f"model.tokenizer.name_or_path={args.tokenizer}",
               "task=text", f"task.path={args.text}", f"max_length={args.max_length}", f"stride={args.stride}",
               "dtype=bfloat16", "batch_size=auto", "cache_dir=null", f"hydra.run.dir={run_dir}", *MODES[mode]]
    env = {**os.environ, "EVALKIT_COMPILE_CACHE": str(compile_cache), "TORCH_LOGS": "recompiles"}
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - started
    log.write(f"===== {mode} ({run_dir.name}) rc={finished.returncode} {wall:.1f} s\n{finished.stderr[-20000:]}\n")
    log.flush()
    if finished.returncode != 0:
        return {"mode": mode, "returncode": finished.returncode, "stderr_tail": finished.stderr[-2000:]}
    record = json.loads((run_dir / "results.json").read_text())
    return {"mode": mode, "command_wall_seconds": wall, "timing": record["timing"], "model": record["model"],
            "metrics": {key: record["metrics"][key] for key in ("nll_sum", "tokens_scored", "perplexity")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random-llama3-8b")
    parser.add_argument("--text", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--max-length", type=int, default=4096)
    parser.add_argument("--stride", type=int, default=2048)
    parser.add_argument("--modes", default="eager,compile_cold,compile_warm,auto")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=400)
    parser.add_argument("--out", required=True)
    parser.add_argument("--log", help="the runs' stderr (with TORCH_LOGS=recompiles)")
    args = parser.parse_args()
    report = {"benchmark": "one command per run, fresh process: perplexity of a text file", "model": args.model,
              "max_length": args.max_length, "stride": args.stride, "hardware": hardware(),
              "versions": library_versions(), "matmul_bf16_tflops_measured": matmul_tflops(), "runs": []}
    torch.cuda.empty_cache()
    work = Path(tempfile.mkdtemp(prefix="one-command-"))
    compile_cache = work / "compiled"
    with open(args.log or os.devnull, "w") as log:
        for mode in args.modes.split(","):
            for repeat in range(args.repeat if mode != "compile_cold" else 1):  # cold only once: it fills the cache
                row = run_once(args, mode, work / f"{mode}-{repeat}", compile_cache, log)
                if "timing" in row:
                    flops = model_flops(args.model, row["metrics"]["tokens_scored"] + 1, args.max_length, args.stride)
                    row["mfu"] = flops / row["timing"]["eval_seconds"] / 1e12 / report["matmul_bf16_tflops_measured"]
                report["runs"].append(row)
                print(json.dumps({k: row.get(k) for k in ("mode", "command_wall_seconds", "mfu")}),
                      {k: round(v, 2) for k, v in row.get("timing", {}).items() if k.endswith("seconds")}, flush=True)
                write_json(Path(args.out), report)


if __name__ == "__main__":
    main()
