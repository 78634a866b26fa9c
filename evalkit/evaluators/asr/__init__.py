"""Speech recognition word error rate (units: utterances): corpus WER (all errors over all reference words, never a
mean of utterance WERs) with substitutions/deletions/insertions/hits from jiwer, CER, a 95% bootstrap interval, and
RTFx (audio seconds / transcription seconds, after a warm-up). References and hypotheses are normalised alike."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from evalkit.config.settings import setting
from evalkit.data import load_utterances, utterances_fingerprint
from evalkit.evaluators.asr.audio import (
    NORMALIZERS,
    SEGMENT_S,
    WHISPER_WINDOW_S,
    Prepared,
    normalizer,
    prepare,
    read_audio,
    wer_metrics,
)
from evalkit.evaluators.base import TEXT, Data, Evaluator, Metric, ModelRequest, Outcome, PreparedJob, Units
from evalkit.extras import extra

if TYPE_CHECKING:
    from evalkit.evaluators.asr.transcriber import Transcriber


@dataclass(frozen=True)
class Settings:
    normalizer: str = setting("whisper_english", "applied to reference and hypothesis alike", choices=NORMALIZERS)
    language: str | None = setting(None, "multilingual Whisper: e.g. en (null: detected); ignored by English-only "
                                   "and CTC models")
    asr_task: str = setting("transcribe", "multilingual Whisper: transcribe or translate",
                            choices=("transcribe", "translate"))
    num_beams: int = setting(1, "Whisper decoding: 1 = greedy (as the Open ASR Leaderboard); the HF pipeline's "
                             "default is 5", minimum=1)
    chunk_length_s: float = setting(30.0, "CTC: audio longer than this is transcribed in overlapping chunks, as the "
                                    "HF pipeline does", minimum=1)
    on_error: str = setting("raise", "a bad utterance stops the run (raise), or is skipped and counted (skip)",
                            choices=("raise", "skip"))


class Asr(Evaluator):
    name = "asr"
    Settings = Settings
    throughput = "audio_seconds"
    progress_unit = "s"
    unit_name = "utterance"
    metrics = (
        Metric("wer", "word error rate over the corpus: (substitutions + deletions + insertions) / reference words",
               False, "", headline=True, interval="wer_ci95"),
        Metric("cer", "character error rate over the corpus", False),
        Metric("mean_utterance_wer", "mean of per-utterance WERs, for contrast only (not the WER)", False),
        Metric("rtfx", "audio seconds transcribed per second of compute", True, "x"),
        Metric("utterances", "utterances evaluated", None, count=True, units=True),
        Metric("skipped", "utterances skipped (on_error=skip)", None, count=True),
        Metric("skipped_utterances", "the skipped utterances with their reasons", None),
        Metric("substitutions", "reference words replaced by another word", None, "words"),
        Metric("deletions", "reference words missing from the hypothesis", None, "words"),
        Metric("insertions", "hypothesis words with no reference word", None, "words"),
        Metric("hits", "reference words transcribed correctly", None, "words"),
        Metric("reference_words", "words of the normalised references", None, "words"),
        Metric("audio_seconds", "seconds of audio transcribed", None, "s"),
        Metric("normalizer", "the text normaliser applied to references and hypotheses", None),
    )

    def models(self, settings: Settings, model: Mapping, facts) -> dict[str, ModelRequest]:
        seq2seq = facts.is_encoder_decoder
        return {"model": ModelRequest(model, "speech-seq2seq" if seq2seq else "ctc")}

    def limit_read(self, metrics: Mapping, task: Mapping) -> int | None:
        return metrics["utterances"] + metrics["skipped"]  # skipped ones were read too

    def read_data(self, task: Mapping, settings: Settings, run) -> Data:
        utterances, origin = load_utterances(task, run.data_dir, run.limit)
        return Data(utterances, utterances_fingerprint(utterances), origin)

    def prepare(self, settings: Settings, run, task: Mapping, data: Data, models: dict) -> AsrJob:
        from evalkit.evaluators.asr.transcriber import Transcriber  # torch: imported after the command line's checks

        loaded = models["model"]
        transcribe = Transcriber(loaded.model, loaded.tokenizer, loaded.head == "speech-seq2seq", settings.language,
                                 settings.asr_task, settings.chunk_length_s, settings.num_beams)
        normalize = normalizer(settings.normalizer)
        prepared, skipped = prepare(data.content, normalize, settings.on_error)
        durations = [p.duration for p in prepared]
        order = sorted(range(len(prepared)), key=lambda i: -durations[i])  # batches of similar length
        return AsrJob(Units(len(prepared), durations, order=order), transcribe, prepared, skipped, normalize, settings,
                      data.origin)


@dataclass
class AsrJob(PreparedJob):
    """Utterances (units, longest first), transcribed in batches and scored by corpus WER."""

    units: Units
    transcribe: Transcriber
    prepared: list[Prepared]
    skipped: list[dict]
    normalize: object
    settings: Settings
    origin: str
    # utterances sorted by duration: little padding
    cpu_auto_batch: ClassVar[int] = 8
    cuda_auto_batch: ClassVar[int] = 8

    def warm_up(self, todo: list[int]) -> None:
        if todo:  # the shortest utterance, at most one Whisper window (and one segment) of it
            shortest = min((self.prepared[i] for i in todo), key=lambda p: p.duration)
            stop = min(WHISPER_WINDOW_S, SEGMENT_S)
            self.transcribe([read_audio(shortest.utterance.audio, self.transcribe.rate, 0.0, stop)])

    def score(self, batch: list[int]) -> list[dict]:
        """A batch of utterances read now; one longer than SEGMENT_S alone, a segment at a time."""
        rate, prepared = self.transcribe.rate, self.prepared
        short = [i for i in batch if prepared[i].duration <= SEGMENT_S]
        texts = dict(zip(short, self.transcribe([read_audio(prepared[i].utterance.audio, rate) for i in short])
                         if short else []))
        for i in (i for i in batch if i not in texts):
            starts = [k * SEGMENT_S for k in range(math.ceil(prepared[i].duration / SEGMENT_S))]
            texts[i] = " ".join(self.transcribe([read_audio(prepared[i].utterance.audio, rate, start,
                                                            start + SEGMENT_S)])[0] for start in starts).strip()
        return [{"text": texts[i]} for i in batch]

    def record_type(self, index: int) -> dict:
        return {"text": TEXT}

    def aggregate(self, records: list[dict], throughput: float) -> Outcome:
        prepared = self.prepared
        raw = [record["text"] for record in records]
        references = [p.reference for p in prepared]
        hypotheses = [self.normalize(text) for text in raw]
        metrics = wer_metrics(references, hypotheses)
        metrics.update(utterances=len(prepared), skipped=len(self.skipped), skipped_utterances=self.skipped,
                       audio_seconds=sum(p.duration for p in prepared), rtfx=throughput,
                       normalizer=self.settings.normalizer)
        jiwer = extra("jiwer")
        samples = [
            {"id": p.utterance.id,
             "audio": str(p.utterance.audio) if not isinstance(p.utterance.audio, Mapping) else None,
             "duration_s": p.duration, "reference": p.utterance.text, "hypothesis": text,
             "reference_normalized": ref, "hypothesis_normalized": hyp, "wer": jiwer.wer(ref, hyp)}
            for p, text, ref, hyp in zip(prepared, raw, references, hypotheses)
        ]
        return Outcome(metrics, samples, {"origin": self.origin, "utterances": len(prepared)})


EVALUATOR = Asr()
