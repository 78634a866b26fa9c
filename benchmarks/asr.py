"""ASR speed: RTFx (audio seconds / transcription seconds) of evalkit's batched transcription against transformers'
ASR pipeline at batch 1, same model, same clips, one process, each after a warm-up; writes JSON.

    python benchmarks/asr.py --model whisper-base-packaged --out outputs/bench_asr.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import transformers

from evalkit.config.presets import model_spec
from evalkit.data import load_utterances
from evalkit.evaluators.asr.audio import normalizer, read_audio, wer_metrics
from evalkit.evaluators.asr.transcriber import Transcriber
from evalkit.files import write_json
from evalkit.job.results import hardware, library_versions
from evalkit.loading import LoadOptions, load_model

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / ".." / "shared" / "data" / "speech" / "asr_manifest.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base-packaged")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="outputs/bench_asr.json")
    args = parser.parse_args()

    loaded = load_model(model_spec(args.model), LoadOptions(device="cpu"), "speech-seq2seq")
    processor = loaded.tokenizer
    transcribe = Transcriber(loaded.model, processor, seq2seq=True)
    utterances, _ = load_utterances({"format": "manifest", "path": str(MANIFEST)}, None)
    audio = [read_audio(u.audio, transcribe.rate) for u in utterances]
    seconds_of_audio = sum(len(a) for a in audio) / transcribe.rate
    pipe = transformers.pipeline("automatic-speech-recognition", model=loaded.model, tokenizer=processor.tokenizer,
                                 feature_extractor=processor.feature_extractor, device="cpu")
    kwargs = {"generate_kwargs": transcribe.generate_kwargs}

    pipe(audio[0], **kwargs)  # warm-ups
    transcribe(audio[:1])
    started = time.perf_counter()
    reference = [pipe(a, **kwargs)["text"].strip() for a in audio]
    reference_seconds = time.perf_counter() - started
    order = sorted(range(len(audio)), key=lambda i: -len(audio[i]))
    ours = [""] * len(audio)
    started = time.perf_counter()
    for start in range(0, len(order), args.batch_size):
        chunk = order[start : start + args.batch_size]
        for i, text in zip(chunk, transcribe([audio[i] for i in chunk])):
            ours[i] = text
    seconds = time.perf_counter() - started

    normalize = normalizer("whisper_english")
    references = [normalize(u.text) for u in utterances]
    report = {
        "benchmark": "asr", "model": loaded.provenance, "utterances": len(audio), "audio_seconds": seconds_of_audio,
        "reference": {"name": "transformers ASR pipeline, batch 1", "seconds": reference_seconds,
                      "rtfx": seconds_of_audio / reference_seconds,
                      "wer": wer_metrics(references, [normalize(t) for t in reference])["wer"]},
        "evalkit": {"batch_size": args.batch_size, "seconds": seconds, "rtfx": seconds_of_audio / seconds,
                    "wer": wer_metrics(references, [normalize(t) for t in ours])["wer"]},
        "speedup": reference_seconds / seconds,
        "identical_transcripts": sum(a == b for a, b in zip(reference, ours)),
        "hardware": hardware(), "versions": library_versions(),
    }
    write_json(Path(args.out), report)
    print(f"RTFx evalkit {report['evalkit']['rtfx']:.2f} vs pipeline {report['reference']['rtfx']:.2f}: "
          f"{report['speedup']:.2f}x; identical transcripts {report['identical_transcripts']}/{len(audio)}")


if __name__ == "__main__":
    main()
