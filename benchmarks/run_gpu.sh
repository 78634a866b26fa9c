#!/usr/bin/env bash
# Everything measured on a 2-GPU machine, in one call: the CLI on 1 GPU vs 2 GPUs (torchrun) over a 4x-repeated
# WikiText-2 stream, device_map=auto split across both GPUs vs one GPU, then benchmarks/gpu.py on GPU 0: perplexity,
# NLI and ASR against their references (VARIANTS=comma list picks evalkit's perplexity variants; see gpu.py).
# Needs: .bench/{wikitext_ids.pt,tokenizer/,bart-tokenizer/,whisper-base/,wiki4x.txt} (made by benchmarks/prepare_gpu_inputs.py). Results -> $OUT.
set -uo pipefail
OUT=${OUT:-outputs/gpu}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
runs=/tmp/evalkit-runs
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'gpus', torch.cuda.device_count())"

common="model=random-gpt2-large model.tokenizer.name_or_path=.bench/tokenizer task=text task.path=.bench/wiki4x.txt dtype=bfloat16 batch_size=32 hydra.output_subdir=null"
python3 -m evalkit $common device=cuda:0 hydra.run.dir=$runs/one 2>&1 | tail -2
torchrun --nproc_per_node 2 -m evalkit $common hydra.run.dir=$runs/two 2>&1 | tail -2

python3 - <<'PY'
import torch, transformers
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer=36, n_embd=1280, n_head=20, vocab_size=50257, n_positions=1024)
transformers.GPT2LMHeadModel(config).to(torch.bfloat16).save_pretrained("/tmp/random-gpt2-large")
transformers.AutoTokenizer.from_pretrained(".bench/tokenizer").save_pretrained("/tmp/random-gpt2-large")
PY
split="model.name_or_path=/tmp/random-gpt2-large task=text task.path=.bench/wiki4x.txt limit=100000 dtype=bfloat16 hydra.output_subdir=null"
python3 -m evalkit $split device_map=auto 'max_memory={0:1GiB,1:60GiB}' hydra.run.dir=$runs/split 2>&1 | tail -2
python3 -m evalkit $split device=cuda:0 hydra.run.dir=$runs/whole 2>&1 | tail -2
for run in one two split whole; do cp $runs/$run/results.json "$OUT/$run-results.json"; done
python3 - <<'PY'
import json, os
out = os.environ.get("OUT", "outputs/gpu")
r = {n: json.load(open(f"{out}/{n}-results.json")) for n in ("one", "two", "split", "whole")}
one, two = r["one"], r["two"]
print("1 GPU", one["timing"]["eval_seconds"], "s; 2 GPUs", two["timing"]["eval_seconds"], "s; speedup",
      one["timing"]["eval_seconds"] / two["timing"]["eval_seconds"])
print("tokens", one["metrics"]["tokens_scored"], two["metrics"]["tokens_scored"], "nll rel diff",
      abs(one["metrics"]["nll_sum"] - two["metrics"]["nll_sum"]) / one["metrics"]["nll_sum"])
print("split devices", r["split"]["model"]["devices"], "nll rel diff vs one GPU",
      abs(r["split"]["metrics"]["nll_sum"] - r["whole"]["metrics"]["nll_sum"]) / r["whole"]["metrics"]["nll_sum"])
PY

python3 benchmarks/gpu.py --tokens-file .bench/wikitext_ids.pt --tokenizer .bench/tokenizer --texts .bench/wiki4x.txt \
  --bart-tokenizer .bench/bart-tokenizer --whisper .bench/whisper-base --out "$OUT/bench_gpu.json" \
  --variants "${VARIANTS:-evalkit_bfloat16_auto,evalkit_bfloat16_compile_auto}" 2>&1 \
  | grep -v "Loading weights" | tee "$OUT/bench_gpu.log"

