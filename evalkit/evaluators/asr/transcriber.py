"""Transcription for the asr evaluator: Whisper-style seq2seq models (generate; sequential long-form decoding past
30 s) and CTC models (greedy argmax; pipeline-style chunking past chunk_length_s)."""

from __future__ import annotations

import numpy as np
import torch

from evalkit.evaluators.asr.audio import WHISPER_WINDOW_S
from evalkit.job.batching import variable_shape_attention
from evalkit.scoring.probes import model_device


class Transcriber:
    """Turns batches of 16 kHz-style sample arrays into text with one model, the same way for warm-up and timing."""

    def __init__(self, model, processor, seq2seq: bool, language=None, asr_task="transcribe", chunk_length_s=30.0,
                 num_beams=1):
        self.model, self.processor, self.seq2seq = model, processor, seq2seq
        self.device = model_device(model)
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
