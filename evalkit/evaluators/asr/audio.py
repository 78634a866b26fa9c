"""Speech recognition pieces for the asr evaluator that need no torch: audio reading, normalisation and WER
(transcription is transcriber.py).

References and hypotheses are normalised alike; WER is the corpus figure (all errors over all reference words, never
a mean of utterance WERs), with substitutions/deletions/insertions/hits from jiwer, CER, a 95% bootstrap interval over
utterances, and RTFx = audio seconds / transcription seconds, measured after a warm-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from evalkit.data import Utterance
from evalkit.errors import EvalkitError
from evalkit.extras import extra
from evalkit.files import check_regular
from evalkit.metrics import bootstrap_ratio_interval

NORMALIZERS = ("whisper_english", "basic", "none")
SEGMENT_S = 600.0  # longer audio is read and transcribed this much at a time: memory independent of its length
WHISPER_WINDOW_S = 30.0  # Whisper's encoder sees 30 s; longer audio goes through sequential long-form decoding


def normalizer(name: str):
    """The text normaliser applied to references and hypotheses alike."""
    if name == "whisper_english":
        return extra("whisper_normalizer.english").EnglishTextNormalizer()  # Whisper's, spellings included
    if name == "basic":
        return extra("whisper_normalizer.basic").BasicTextNormalizer()
    if name == "none":
        return lambda text: text
    raise EvalkitError(f"normalizer={name} is not allowed; allowed: {', '.join(NORMALIZERS)}")


def audio_duration(audio) -> float:
    """Seconds of audio in a file (from its header: nothing decoded) or a hub record."""
    if isinstance(audio, Mapping):
        frames, rate = len(audio["array"]), int(audio["sampling_rate"])
    else:
        check_regular(audio, "audio file")  # libsndfile would block on a FIFO's open
        info = extra("soundfile").info(str(audio))
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
        soundfile = extra("soundfile")
        source_rate = soundfile.info(str(audio)).samplerate
        stop = None if stop_s is None else round(stop_s * source_rate)
        samples, source_rate = soundfile.read(str(audio), dtype="float32", always_2d=True,
                                              start=round(start_s * source_rate), stop=stop)
        samples = samples.mean(axis=1)
    if samples.ndim != 1 or len(samples) == 0:
        raise ValueError("zero-length audio")
    return samples if source_rate == rate else extra("soxr").resample(samples, source_rate, rate).astype(np.float32)


@dataclass
class Prepared:
    utterance: Utterance
    duration: float  # seconds; the audio itself is read when its batch is transcribed
    reference: str  # normalised


def prepare(utterances: list[Utterance], normalize, on_error: str) -> tuple[list[Prepared], list[dict]]:
    """Check every utterance (its audio's header, not its samples: memory stays independent of the audio's length);
    a bad one raises (on_error=raise) or is skipped with its reason."""
    prepared, skipped = [], []
    unreadable = (OSError, RuntimeError, TypeError, KeyError, extra("soundfile").LibsndfileError, EvalkitError)
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
            except unreadable as error:
                raise ValueError(f"unreadable audio {utterance.audio} ({error})") from None
            prepared.append(Prepared(utterance, duration, normalize(utterance.text)))
        except ValueError as error:
            if on_error == "raise":
                raise EvalkitError(f"utterance {utterance.id}: {error} (on_error=skip skips such utterances)") from None
            skipped.append({"id": utterance.id, "reason": str(error)})
    if not prepared:
        raise EvalkitError("no utterance could be evaluated")
    return prepared, skipped


def wer_metrics(references: list[str], hypotheses: list[str]) -> dict:
    """Corpus WER and its parts (jiwer), CER, and a 95% bootstrap interval over utterances."""
    jiwer = extra("jiwer")
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
