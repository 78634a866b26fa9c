"""Speech recognition pieces for the asr evaluator: audio reading, transcription with Whisper-style seq2seq models
(generate; sequential long-form decoding past 30 s) and CTC models (greedy argmax; pipeline-style chunking past
chunk_length_s), and WER.

References and hypotheses are normalised alike; WER is the corpus figure (all errors over all reference words, never
a mean of utterance WERs), with substitutions/deletions/insertions/hits from jiwer, CER, a 95% bootstrap interval over
utterances, and RTFx = audio seconds / transcription seconds, measured after a warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jiwer
import numpy as np
import soundfile
import soxr
import torch
from tqdm.auto import tqdm

from evalkit.batching import variable_shape_attention
from evalkit.data import Utterance
from evalkit.errors import EvalkitError
from evalkit.metrics import bootstrap_ratio_interval

NORMALIZERS = ("whisper_english", "basic", "none")
SEGMENT_S = 600.0  # longer audio is read and transcribed this much at a time: memory independent of its length
WHISPER_WINDOW_S = 30.0  # Whisper's encoder sees 30 s; longer audio goes through sequential long-form decoding


def normalizer(name: str):
    """The text normaliser applied to references and hypotheses alike."""
    if name == "whisper_english":
        from whisper_normalizer.english import EnglishTextNormalizer  # Whisper's English normaliser, spellings included

        return EnglishTextNormalizer()
    if name == "basic":
        from whisper_normalizer.basic import BasicTextNormalizer

        return BasicTextNormalizer()
    if name == "none":
        return lambda text: text
    raise EvalkitError(f"normalizer={name} is not allowed; allowed: {', '.join(NORMALIZERS)}")


def audio_duration(audio) -> float:
    """Seconds of audio in a file (from its header: nothing decoded) or a hub record."""
    if isinstance(audio, Mapping):
        frames, rate = len(audio["array"]), int(audio["sampling_rate"])
    else:
        info = soundfile.info(str(audio))
        frames, rate = info.frames, info.samplerate
    if frames <= 0:
        raise ValueError("zero-length audio")
    return frames / rate


def read_audio(audio, rate: int, start_s: float = 0.0, stop_s: float | None = None) -> np.ndarray:
    """Mono float32 samples at `rate` (of [start_s, stop_s) only, when given): a file read with soundfile (channels
    averaged) and resampled with soxr, or a hub record {"array", "sampling_rate"}."""
    if isinstance(audio, Mapping):
        source_rate = int(audio["sampling_rate"])
        stop = None if stop_s is None else round(stop_s * source_rate)
        samples = np.asarray(audio["array"], dtype=np.float32)[round(start_s * source_rate):stop]
    else:
        source_rate = soundfile.info(str(audio)).samplerate
        stop = None if stop_s is None else round(stop_s * source_rate)
        samples, source_rate = soundfile.read(str(audio), dtype="float32", always_2d=True,
                                              start=round(start_s * source_rate), stop=stop)
        samples = samples.mean(axis=1)
    if samples.ndim != 1 or len(samples) == 0:
        raise ValueError("zero-length audio")
    return samples if source_rate == rate else soxr.resample(samples, source_rate, rate).astype(np.float32)


@dataclass
class Prepared:
    utterance: Utterance
    duration: float  # seconds; the audio itself is read when its batch is transcribed
    reference: str  # normalised


def prepare(utterances: list[Utterance], normalize, on_error: str) -> tuple[list[Prepared], list[dict]]:
    """Check every utterance (its audio's header, not its samples: memory stays independent of the audio's length);
    a bad one raises (on_error=raise) or is skipped with its reason."""
    prepared, skipped = [], []
    for utterance in tqdm(utterances, desc="reading audio", unit="utt", dynamic_ncols=True):
        try:
            if utterance.audio is None:
                raise ValueError("no audio given")
            if utterance.text is not None and not isinstance(utterance.text, str):
                raise ValueError(f"reference is not a text ({type(utterance.text).__name__})")
            if not (utterance.text or "").strip() or not normalize(utterance.text).strip():
                raise ValueError("empty reference")
            try:
                duration = audio_duration(utterance.audio)
            except (OSError, RuntimeError, TypeError, KeyError, soundfile.LibsndfileError) as error:
                raise ValueError(f"unreadable audio {utterance.audio} ({error})") from None
            prepared.append(Prepared(utterance, duration, normalize(utterance.text)))
        except ValueError as error:
            if on_error == "raise":
                raise EvalkitError(f"utterance {utterance.id}: {error} (on_error=skip skips such utterances)") from None
            skipped.append({"id": utterance.id, "reason": str(error)})
    if not prepared:
        raise EvalkitError("no utterance could be evaluated")
    return prepared, skipped


class Transcriber:
    """Turns batches of 16 kHz-style sample arrays into text with one model, the same way for warm-up and timing."""

    def __init__(self, model, processor, seq2seq: bool, language=None, asr_task="transcribe", chunk_length_s=30.0,
                 num_beams=1):
        self.model, self.processor, self.seq2seq = model, processor, seq2seq
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.rate = processor.feature_extractor.sampling_rate
        self.generate_kwargs = {"num_beams": num_beams}  # explicit: the HF pipeline would default to 5 beams
        if seq2seq and getattr(model.generation_config, "is_multilingual", False):
            self.generate_kwargs.update(task=asr_task, **({"language": language} if language else {}))
        self.chunk_length_s = chunk_length_s
        self._chunked = None

    @torch.inference_mode()
    @variable_shape_attention()
    def __call__(self, batch: list[np.ndarray]) -> list[str]:
        if self.seq2seq:
            return self.whisper(batch)
        if max(len(s) for s in batch) > self.chunk_length_s * self.rate:
            return [self.ctc_chunked(samples) for samples in batch]
        inputs = self.processor(batch, sampling_rate=self.rate, return_tensors="pt", padding=True).to(self.device)
        logits = self.model(inputs.input_values.to(self.dtype), attention_mask=inputs.get("attention_mask")).logits
        return self.processor.batch_decode(logits.argmax(-1))

    def whisper(self, batch: list[np.ndarray]) -> list[str]:
        long_form = max(len(s) for s in batch) > WHISPER_WINDOW_S * self.rate
        extra = {"truncation": False, "padding": "longest"} if long_form else {}
        features = self.processor(batch, sampling_rate=self.rate, return_tensors="pt", return_attention_mask=True,
                                  **extra).to(self.device)
        tokens = self.model.generate(
            features.input_features.to(self.dtype), attention_mask=features.attention_mask,
            return_timestamps=long_form, **self.generate_kwargs,
        )
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]

    def ctc_chunked(self, samples: np.ndarray) -> str:
        """Long CTC audio through transformers' own chunking (overlapping strides, the pipeline's)."""
        import transformers

        if self._chunked is None:
            self._chunked = transformers.pipeline(
                "automatic-speech-recognition", model=self.model, tokenizer=self.processor.tokenizer,
                feature_extractor=self.processor.feature_extractor, chunk_length_s=self.chunk_length_s,
                device=self.device,
            )
        return self._chunked({"raw": samples, "sampling_rate": self.rate})["text"]


def wer_metrics(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER and its parts (jiwer), CER, and a 95% bootstrap interval over utterances."""
    words = jiwer.process_words(references, hypotheses)
    reference_words = np.array([len(r.split()) for r in references], dtype=float)
    errors = np.array([
        o.substitutions + o.deletions + o.insertions
        for o in (jiwer.process_words(r, h) for r, h in zip(references, hypotheses))
    ], dtype=float)
    return {
        "wer": words.wer,
        "wer_ci95": bootstrap_ratio_interval(errors, reference_words),
        "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions,
        "hits": words.hits, "reference_words": int(reference_words.sum()),
        "cer": jiwer.cer(references, hypotheses),
        "mean_utterance_wer": float(np.mean(errors / reference_words)),  # for comparison only: not the WER
    }
