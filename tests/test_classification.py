"""Zero-shot classification against independent references: the HF pipeline (nli), lm-evaluation-harness's
HFLM.loglikelihood on the same (context, continuation) strings (loglikelihood), direct pooling with the model
(embedding); the CLI on real data."""

import json
import math

import numpy as np
import pytest
import torch
import transformers
from conftest import SHARED_DATA, minilm_dir, read_samples, run_cli, run_results
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import evalkit
from evalkit.data import load_examples
from evalkit.evaluators.classification.methods import embedding_scores, nli_scores
from evalkit.loading.facts import context_length
from evalkit.loading.loaded import LoadedModel
from evalkit.scoring.causal_lm import CausalLM
from oracles import pipeline_nli_scores

SST2 = {"name": "sst2", "data_file": "classification/sst2/stsa.binary.dev", "format": "label_first",
        "text_field": "text", "label_field": "label", "labels": ["negative", "positive"]}
TEXTS = ["the film is a delight from start to finish .", "a dull , lifeless mess .",
         "Stocks fell sharply after the central bank raised rates.", "The striker scored twice in the final.",
         "New chips promise faster and cheaper computers.", "ok"]
LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TEMPLATE = "This example is about {}."


@pytest.mark.parametrize("architecture", ["bart", "distilbert"])
@pytest.mark.parametrize("multi_label", [False, True])
def test_nli_equals_pipeline(nli_models, architecture, multi_label):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(nli_models[architecture]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(nli_models[architecture])
    expected = np.array(pipeline_nli_scores(model, tokenizer, TEXTS, LABELS, TEMPLATE, multi_label))
    hypotheses = [TEMPLATE.format(label) for label in LABELS]
    for batch_size in (1, 5, 64):
        ours = nli_scores(model, tokenizer, TEXTS, hypotheses, multi_label, batch_size)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    single = nli_scores(model, tokenizer, TEXTS, hypotheses[:1], False, 4)  # one label: entailment vs contradiction
    np.testing.assert_allclose(single, np.array(pipeline_nli_scores(model, tokenizer, TEXTS, LABELS[:1], TEMPLATE,
                                                                    False)), rtol=1e-5, atol=1e-5)


def lm_eval_loglikelihood(model, tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    """lm-eval's HFLM.loglikelihood of (context, continuation) pairs, at the model's context length."""
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1, max_length=context_length(model.config),
              device="cpu")
    return lm.loglikelihood([Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)])


def causal_lm(model, tokenizer) -> CausalLM:
    return CausalLM(LoadedModel(model, tokenizer, torch.device("cpu"), "causal-lm", context_length(model.config)))


def assert_same_loglikelihoods(ours: list[tuple[float, bool]], expected: list[tuple[float, bool]], atol: float):
    np.testing.assert_allclose([ll for ll, _ in ours], [ll for ll, _ in expected], rtol=1e-5, atol=atol)
    assert [greedy for _, greedy in ours] == [greedy for _, greedy in expected]


@pytest.mark.parametrize("model_dir", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_label_loglikelihoods_equal_lm_eval(request, model_dir, tmp_path):
    """Each example's label log-likelihoods and is_greedy as lm-eval's HFLM.loglikelihood gives them for the pairs
    (prompt around the text, continuation around the label): through the CausalLM at several batch sizes, and the
    classification evaluator's per-example scores (samples.jsonl)."""
    path = request.getfixturevalue(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    prompt, continuations = "Article: {}\nTopic:", [f" {label}" for label in LABELS]  # " Sci/Tech": several tokens
    assert len({len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in continuations}) > 1
    pairs = [(prompt.format(text), continuation) for text in TEXTS for continuation in continuations]
    expected = lm_eval_loglikelihood(model, tokenizer, pairs)
    for batch_size in (1, 3, "auto"):
        assert_same_loglikelihoods(causal_lm(model, tokenizer).loglikelihood(pairs, batch_size), expected, 1e-5)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": text, "label": LABELS[k % 4]}) + "\n" for k, text in enumerate(TEXTS)))
    evalkit.evaluate(model={"name": model_dir, "name_or_path": str(path)}, task="classification",
                     method="loglikelihood", device="cpu", cache_dir=None, out_dir=tmp_path / "run",
                     **{"task.path": str(data), "task.labels": LABELS, "task.loglikelihood.prompt": prompt})
    scores = [[sample["scores"][label] for label in LABELS] for sample in read_samples(tmp_path / "run")]
    np.testing.assert_allclose(scores, np.reshape([ll for ll, _ in expected], (len(TEXTS), len(LABELS))),
                               rtol=1e-5, atol=1e-5)


def test_loglikelihood_real_model_on_sst2(smol):
    model, tokenizer = smol
    examples = load_examples(SST2, str(SHARED_DATA), limit=40)
    pairs = [(f"Review: {text}\nSentiment:", label) for text in examples.texts for label in (" negative", " positive")]
    ours = causal_lm(model, tokenizer).loglikelihood(pairs)
    assert_same_loglikelihoods(ours, lm_eval_loglikelihood(model, tokenizer, pairs), 1e-4)
    predictions = np.reshape([ll for ll, _ in ours], (-1, 2)).argmax(1)
    assert (predictions == np.array(examples.labels)).mean() > 0.6  # a real model, better than chance


def test_embedding_equals_direct_computation():
    model = transformers.AutoModel.from_pretrained(minilm_dir()).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    descriptions = [f"This news article is about {label}." for label in LABELS]
    with torch.no_grad():
        def vector(text):
            inputs = tokenizer(text, return_tensors="pt")
            return model(**inputs).last_hidden_state[0].mean(0)  # one text: no padding, a plain mean

        label_vectors = [vector(d) for d in descriptions]
        expected = [[float(torch.cosine_similarity(vector(t), v, dim=0)) for v in label_vectors] for t in TEXTS]
    np.testing.assert_allclose(embedding_scores(model, tokenizer, TEXTS, descriptions, 4), expected, atol=1e-5)


def test_sst2_with_calibration(tmp_path):
    """In-process, so the model pool serves the SmolLM2 an earlier job loaded (the CLI's keys: test_cli.py)."""
    run_dir = tmp_path / "run"
    metrics = evalkit.evaluate(task="sst2", data_dir=str(SHARED_DATA), limit=24, calibrate=True, device="cpu",
                               cache_dir=None, out_dir=run_dir)["metrics"]
    assert metrics["method"] == "loglikelihood" and metrics["examples"] == 24 and metrics["calibrated"]
    assert 0 <= metrics["accuracy_ci95"][0] <= metrics["accuracy"] <= metrics["accuracy_ci95"][1] <= 1
    assert sum(map(sum, metrics["confusion_matrix"])) == 24 and set(metrics["per_class"]) == {"negative", "positive"}
    assert {"accuracy_uncalibrated", "accuracy_norm"} <= set(metrics)
    samples = read_samples(run_dir)
    assert len(samples) == 24 and set(samples[0]["scores"]) == {"negative", "positive"}
    assert math.isclose(np.mean([s["correct"] for s in samples]), metrics["accuracy"])


def test_generic_file_task_with_nli(tmp_path, nli_models):
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": LABELS[i % 4]}) for i, t in enumerate(TEXTS)))
    record = run_results(tmp_path / "run", f"model.name_or_path={nli_models['distilbert']}", "task=classification",
                         f"task.path={data}", f"task.labels=[{','.join(LABELS)}]")
    assert record["metrics"]["examples"] == len(TEXTS)


def bad_classification_inputs(tmp_path, nli_models, tiny_bert_dir):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "a", "label": "World"}) + "\n" + json.dumps({"text": "b", "label": "Other"}))
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text(json.dumps({"body": "a", "label": "World"}))
    nli = f"model.name_or_path={nli_models['distilbert']}"
    generic = ["task=classification", f"task.path={data}"]
    no_entailment = tmp_path / "no_entailment"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(nli_models["distilbert"])
    model.config.id2label = {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(no_entailment)
    transformers.AutoTokenizer.from_pretrained(nli_models["distilbert"]).save_pretrained(no_entailment)
    return {
        "empty labels": ([nli, *generic, "task.labels=[]"], "task.labels is empty"),
        "duplicate labels": ([nli, *generic, "task.labels=[World,World]"], "duplicates: World"),
        "label not a candidate": ([nli, *generic, "task.labels=[World,Sports]"], "'Other' in row 1"),
        "missing text column": ([nli, "task=classification", f"task.path={no_text}", "task.labels=[World]"],
                                "no column 'text'"),
        "missing label column": ([nli, *generic, "task.labels=[World,Other]", "task.label_field=topic"],
                                 "no column 'topic'"),
        "template without {}": ([nli, *generic, "task.labels=[World,Other]", "task.nli.hypothesis_template=About"],
                                "task.nli.hypothesis_template"),
        "nli model without entailment": ([f"model.name_or_path={no_entailment}", *generic,
                                          "task.labels=[World,Other]"], "no entailment"),
        "non-causal loglikelihood": ([f"model.name_or_path={tiny_bert_dir}", *generic, "task.labels=[World,Other]",
                                      "method=loglikelihood"], "not causal"),
        "unknown method": ([nli, *generic, "task.labels=[World,Other]", "method=vibes"], "method=vibes"),
    }


@pytest.mark.parametrize("case", ["empty labels", "duplicate labels", "label not a candidate", "missing text column",
                                  "missing label column", "template without {}", "nli model without entailment",
                                  "non-causal loglikelihood", "unknown method"])
def test_bad_classification_input_fails_clearly(tmp_path, nli_models, tiny_bert_dir, case):
    overrides, expected = bad_classification_inputs(tmp_path, nli_models, tiny_bert_dir)[case]
    run_dir = tmp_path / "run"
    result = run_cli(*overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("evalkit: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert not (run_dir / "results.json").exists()


def test_classification_metrics_equal_scikit_learn():
    """Per-class precision/recall/F1, macro-F1, accuracy and the confusion matrix against scikit-learn, with a label
    never predicted and one never true (where precision or recall divide by zero: 0, as scikit-learn reports)."""
    metrics_module = pytest.importorskip("sklearn.metrics", reason="LOUD SKIP: scikit-learn (test extra) is absent")
    from evalkit.metrics import classification_metrics

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d", "e"]
    truth = rng.choice([0, 1, 2, 4], size=200)  # "d" is never true
    predictions = np.where(rng.random(200) < 0.6, truth, rng.choice([0, 1, 3], size=200))  # "e" predicted only if right
    predictions[truth == 4] = 0  # ... and never: "e" is never predicted
    ours = classification_metrics(truth, predictions, labels)
    everything = list(range(len(labels)))
    precision, recall, f1, support = metrics_module.precision_recall_fscore_support(
        truth, predictions, labels=everything, zero_division=0)
    for k, label in enumerate(labels):
        assert ours["per_class"][label] == pytest.approx(
            {"precision": precision[k], "recall": recall[k], "f1": f1[k], "support": support[k]}, abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(metrics_module.f1_score(truth, predictions, labels=everything,
                                                                     average="macro", zero_division=0), abs=1e-12)
    assert ours["accuracy"] == metrics_module.accuracy_score(truth, predictions)
    assert ours["confusion_matrix"] == metrics_module.confusion_matrix(truth, predictions, labels=everything).tolist()
    assert ours["confusion_labels"] == labels
