#!/usr/bin/env bash
# Everything measured on a 2-GPU machine, in one call. PARTS (default: data-parallel device-map bench) picks:
#   data-parallel  the CLI on 1 GPU vs 2 GPUs (torchrun) over a 4x-repeated WikiText-2 stream;
#   dp-8b          the same at Llama-3-8B's shape (random-llama3-8b, max_length 4096, stride 2048, batch_size=auto);
#   tp-8b          those weights saved, then tensor parallel over both GPUs (tp_plan=auto) vs dp-8b's one GPU;
#   device-map     device_map=auto split across both GPUs (max_memory forces it; MAX_MEMORY='{0:1GiB,cpu:60GiB}' splits
#                  GPU 0 and the CPU on a 1-GPU machine) vs one GPU, in float32 and bfloat16;
#   bench          benchmarks/gpu.py on GPU 0: perplexity, NLI and ASR against their references (VARIANTS=comma list
#                  picks evalkit's perplexity variants; see gpu.py).
# Needs: .bench/{wikitext_ids.pt,tokenizer/,bart-tokenizer/,whisper-base/,wiki4x.txt} (made by
# benchmarks/prepare_gpu_inputs.py). Results -> $OUT (multi_gpu.jsonl, bench_gpu.json and .log).
set -uo pipefail
OUT=${OUT:-outputs/gpu}; mkdir -p "$OUT"
PARTS=${PARTS:-data-parallel device-map bench}
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
runs=/tmp/evalkit-runs; mkdir -p $runs
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'gpus', torch.cuda.device_count())"

cli() {  # cli NAME COMMAND...: one evalkit CLI run; its log stays in $runs: its last lines are shown (more on failure)
  local name=$1; shift
  if "$@" hydra.run.dir=$runs/$name hydra.output_subdir=null > "$runs/$name.log" 2>&1; then
    tail -2 "$runs/$name.log"
  else
    tail -20 "$runs/$name.log"
  fi
}
compare() {  # compare BASE OTHER: speedup of OTHER over BASE, token counts and NLL; appended to $OUT/multi_gpu.jsonl
  python3 - "$runs/$1/results.json" "$runs/$2/results.json" "$OUT/multi_gpu.jsonl" <<'PY'
import json, sys
base, other = (json.load(open(path)) for path in sys.argv[1:3])
record = {
    "runs": [path.split("/")[-2] for path in sys.argv[1:3]],
    "speedup": base["timing"]["eval_seconds"] / other["timing"]["eval_seconds"],
    "nll_relative_difference": abs(base["metrics"]["nll_sum"] - other["metrics"]["nll_sum"]) / base["metrics"]["nll_sum"],
    **{name: {key: run[key] for key in ("timing", "metrics", "model", "config", "hardware", "versions") if key in run}
       for name, run in (("base", base), ("other", other))},
}
print(json.dumps({k: record[k] for k in ("runs", "speedup", "nll_relative_difference")}))
print("tokens", base["metrics"]["tokens_scored"], other["metrics"]["tokens_scored"], "devices", other["model"]["devices"])
with open(sys.argv[3], "a") as out:
    out.write(json.dumps(record) + "\n")
PY
}

if [[ $PARTS == *data-parallel* ]]; then
  common="model=random-gpt2-large model.tokenizer.name_or_path=.bench/tokenizer task=text task.path=.bench/wiki4x.txt dtype=bfloat16"
  cli one python3 -m evalkit $common device=cuda:0
  cli two torchrun --nproc_per_node 2 -m evalkit $common
  compare one two
fi

windows_8b="task=text task.path=.bench/wikitext-2-raw/wiki.test.raw max_length=4096 stride=2048 dtype=bfloat16
            batch_size=auto"
if [[ $PARTS == *dp-8b* ]]; then
  big="model=random-llama3-8b model.tokenizer.name_or_path=.bench/tokenizer $windows_8b"
  cli one-8b python3 -m evalkit $big device=cuda:0
  cli two-8b torchrun --nproc_per_node 2 -m evalkit $big
  compare one-8b two-8b
fi

if [[ $PARTS == *tp-8b* ]]; then  # the same random weights as dp-8b's (seed 0, built on a GPU), from disk
  python3 - <<'PY'
from transformers import AutoTokenizer
from evalkit.loading import LoadOptions, load_fresh
from evalkit.config.presets import model_spec
spec = {**model_spec("random-llama3-8b"), "tokenizer": {"name_or_path": ".bench/tokenizer"}}
load_fresh(spec, LoadOptions(device="cuda:0", dtype="bfloat16"), "causal-lm").model.save_pretrained("/tmp/llama3-8b-shape")
AutoTokenizer.from_pretrained(".bench/tokenizer").save_pretrained("/tmp/llama3-8b-shape")
PY
  cli tp-8b torchrun --nproc_per_node 2 -m evalkit model.name_or_path=/tmp/llama3-8b-shape $windows_8b tp_plan=auto
  compare one-8b tp-8b
fi

if [[ $PARTS == *device-map* ]]; then
  python3 - <<'PY'
import torch, transformers
torch.manual_seed(0)
config = transformers.GPT2Config(n_layer=36, n_embd=1280, n_head=20, vocab_size=50257, n_positions=1024)
transformers.GPT2LMHeadModel(config).save_pretrained("/tmp/random-gpt2-large")
transformers.AutoTokenizer.from_pretrained(".bench/tokenizer").save_pretrained("/tmp/random-gpt2-large")
PY
  for dtype in float32 bfloat16; do
    split="model.name_or_path=/tmp/random-gpt2-large task=text task.path=.bench/wiki4x.txt limit=100000 dtype=$dtype"
    cli whole-$dtype python3 -m evalkit $split device=cuda:0
    cli split-$dtype python3 -m evalkit $split device_map=auto "max_memory=${MAX_MEMORY:-{0:1GiB,1:60GiB\}}"
    compare whole-$dtype split-$dtype
  done
fi

if [[ $PARTS == *bench* ]]; then
  python3 benchmarks/gpu.py --tokens-file .bench/wikitext_ids.pt --tokenizer .bench/tokenizer --texts .bench/wiki4x.txt \
    --bart-tokenizer .bench/bart-tokenizer --whisper .bench/whisper-base --out "$OUT/bench_gpu.json" \
    --variants "${VARIANTS:-evalkit_bfloat16_auto,evalkit_bfloat16_compile_auto}" 2>&1 \
    | grep -v "Loading weights" | tee "$OUT/bench_gpu.log"
fi
