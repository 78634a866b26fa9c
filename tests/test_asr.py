"""Speech recognition: the CTranslate2 Whisper import against transformers' ASR pipeline on the real shared clips,
CTC against the pipeline on a random-init wav2vec2, WER against jiwer, long-form audio, bad input."""

import json

import jiwer
import numpy as np
import pytest
import soundfile
import torch
import transformers
from conftest import SHARED_DATA, read_samples, run_cli, run_results

import evalkit
from evalkit.config.presets import model_spec
from evalkit.data import load_utterances
from evalkit.evaluators.asr.audio import read_audio, wer_metrics
from evalkit.evaluators.asr.transcriber import Transcriber
from evalkit.loading import LoadOptions, load_model

MANIFEST = SHARED_DATA / "speech" / "asr_manifest.jsonl"


def test_whisper_base_packaged_equals_pipeline_on_shared_clips(tmp_path):
    """The first 6 clips through evalkit (the Python API); the pipeline, run clip by clip, on every third."""
    run_dir = tmp_path / "run"
    record = evalkit.evaluate(model="whisper-base-packaged", task="asr_manifest", data_dir=str(SHARED_DATA),
                              device="cpu", cache_dir=None, out_dir=run_dir, limit=6)
    samples = {s["id"]: s for s in read_samples(run_dir)}
    assert len(samples) == 6 and record["metrics"]["utterances"] == 6
    assert record["model"]["format"] == "ctranslate2" and len(record["model"]["weights_sha256"]) == 64

    loaded = load_model(model_spec("whisper-base-packaged"), LoadOptions(device="cpu"), "speech-seq2seq")
    processor = loaded.tokenizer
    pipe = transformers.pipeline("automatic-speech-recognition", model=loaded.model, tokenizer=processor.tokenizer,
                                 feature_extractor=processor.feature_extractor, device="cpu")
    utterances, _ = load_utterances({"format": "manifest", "path": str(MANIFEST)}, None)
    for utterance in utterances[:6:3]:
        audio = read_audio(utterance.audio, 16000)
        expected = pipe(audio, generate_kwargs={"task": "transcribe", "num_beams": 1})["text"].strip()  # same settings
        assert samples[utterance.id]["hypothesis"] == expected, utterance.id

    metrics = record["metrics"]
    references = [s["reference_normalized"] for s in samples.values()]
    hypotheses = [s["hypothesis_normalized"] for s in samples.values()]
    assert metrics["wer"] == pytest.approx(jiwer.wer(references, hypotheses), abs=1e-12)
    assert metrics["wer"] < 0.15  # whisper base with Whisper's English normaliser: about 0.06 on all 37 clips
    assert metrics["wer_ci95"][0] <= metrics["wer"] <= metrics["wer_ci95"][1] and metrics["rtfx"] > 0


@pytest.fixture(scope="module")
def tiny_ctc(tmp_path_factory):
    """A random-init wav2vec2-style CTC model with a character vocabulary, saved as a processor + model folder."""
    path = tmp_path_factory.mktemp("tiny_ctc")
    vocab = {c: i for i, c in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'"])}
    (path / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(path / "vocab.json"))
    features = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    transformers.Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(path)
    config = transformers.Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, conv_dim=(32, 32, 32),
                                         conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
                                         num_conv_pos_embedding_groups=4, pad_token_id=0)
    torch.manual_seed(0)
    transformers.Wav2Vec2ForCTC(config).save_pretrained(path)
    return path


def test_ctc_equals_pipeline(tiny_ctc):
    loaded = load_model({"name_or_path": str(tiny_ctc)}, LoadOptions(device="cpu"), "ctc")
    transcribe = Transcriber(loaded.model, loaded.tokenizer, seq2seq=False)
    utterances, _ = load_utterances({"format": "manifest", "path": str(MANIFEST)}, None, limit=6)
    audio = [read_audio(u.audio, 16000) for u in utterances]
    pipe = transformers.pipeline("automatic-speech-recognition", model=loaded.model,
                                 tokenizer=loaded.tokenizer.tokenizer,
                                 feature_extractor=loaded.tokenizer.feature_extractor, device="cpu")
    expected = [pipe(a)["text"] for a in audio]
    assert [transcribe([a])[0] for a in audio] == expected  # utterance by utterance, as the pipeline runs them
    assert any(expected)  # random weights still emit characters: the comparison is not of empty strings


def test_wer_is_the_corpus_figure_from_jiwer():
    references = ["the cat sat on the mat", "hello", "a b c d e f g h i j"]
    hypotheses = ["the cat sat on mat", "goodbye there", "a b c d e f g h i j"]
    metrics = wer_metrics(references, hypotheses)
    words = jiwer.process_words(references, hypotheses)
    assert metrics["wer"] == words.wer == pytest.approx(3 / 17)  # (1 deletion + 1 substitution + 1 insertion) / 17
    assert (metrics["substitutions"], metrics["deletions"], metrics["insertions"], metrics["hits"]) == (
        words.substitutions, words.deletions, words.insertions, words.hits)
    assert metrics["cer"] == pytest.approx(jiwer.cer(references, hypotheses))
    assert metrics["mean_utterance_wer"] == pytest.approx((1 / 6 + 2 / 1 + 0) / 3)  # differs from the corpus WER
    assert metrics["mean_utterance_wer"] != pytest.approx(metrics["wer"])


def test_long_audio_is_transcribed_whole(tmp_path):
    utterances, _ = load_utterances({"format": "manifest", "path": str(MANIFEST)}, None)
    clips = [u for u in utterances if "ljspeech" in str(u.audio)][:8]
    audio = np.concatenate([read_audio(u.audio, 16000) for u in clips])
    assert len(audio) / 16000 > 45  # past Whisper's 30-second window
    soundfile.write(tmp_path / "long.wav", audio, 16000)
    reference = " ".join(u.text for u in clips)
    (tmp_path / "long.jsonl").write_text(json.dumps({"id": "long", "audio": "long.wav", "text": reference}))
    metrics = run_results(tmp_path / "run", "model=whisper-tiny.en-packaged", "task=asr_manifest",
                          f"task.path={tmp_path / 'long.jsonl'}")["metrics"]
    assert metrics["audio_seconds"] > 45
    assert metrics["deletions"] < 0.05 * metrics["reference_words"]  # nothing after the first 30 s was dropped
    assert metrics["wer"] < 0.2


def test_bad_utterances_raise_or_are_skipped(tmp_path):
    silent = tmp_path / "empty.wav"
    soundfile.write(silent, np.zeros(0, dtype=np.float32), 16000)
    good = SHARED_DATA / "speech" / "jfk" / "jfk.flac"
    lines = [
        {"id": "good", "audio": str(good), "text": "and so my fellow americans"},
        {"id": "missing", "audio": str(tmp_path / "nope.flac"), "text": "x"},
        {"id": "zero-length", "audio": str(silent), "text": "x"},
        {"id": "empty-reference", "audio": str(good), "text": " "},
        {"id": "no-audio", "text": "x"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, lines)))
    common = ["model=whisper-tiny.en-packaged", "task=asr_manifest", f"task.path={tmp_path / 'm.jsonl'}"]
    failed = run_cli(*common, f"hydra.run.dir={tmp_path / 'raise'}")
    assert failed.returncode == 2 and "utterance missing: unreadable audio" in failed.stderr
    assert not (tmp_path / "raise" / "results.json").exists()
    metrics = evalkit.evaluate(model="whisper-tiny.en-packaged", task="asr_manifest",  # in-process: the pool's model
                               **{"task.path": str(tmp_path / "m.jsonl")}, on_error="skip", cache_dir=None)["metrics"]
    assert metrics["utterances"] == 1 and metrics["skipped"] == 4
    reasons = {s["id"]: s["reason"] for s in metrics["skipped_utterances"]}
    assert reasons["zero-length"] == "zero-length audio" and reasons["empty-reference"] == "empty reference"
    assert reasons["no-audio"] == "no audio given" and "unreadable" in reasons["missing"]


def test_librispeech_folder_layout(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("model=whisper-tiny.en-packaged", "task=librispeech_clean", f"data_dir={SHARED_DATA}",
                   f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr
    assert "Passing `generation_config`" not in done.stderr  # transformers' notice on every generate call, hidden
    record = json.loads((run_dir / "results.json").read_text())
    assert record["metrics"]["utterances"] == 4 and record["metrics"]["wer"] < 0.2
    assert record["versions"]["whisper-normalizer"] == "0.1.15" and record["metrics"]["normalizer"] == "whisper_english"
    ids = [sample["id"] for sample in read_samples(run_dir)]
    assert sorted(ids) == ["1089-134686-0000", "1089-134686-0001", "1089-134691-0000", "1089-134691-0001"]
