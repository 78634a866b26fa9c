"""Loading-layer speed paths that change how a model runs, never what it computes."""

import pytest
import torch
import transformers

from evalkit.loading import LoadOptions, align_output_layer, load_model
from evalkit.perplexity import score_windows
from evalkit.windows import window_schedule


def test_aligned_output_layer_gives_the_same_logits():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=1001, n_positions=64)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 1001, (2, 16))
    with torch.inference_mode():
        before = model(ids).logits
        assert align_output_layer(model)
        assert model.get_output_embeddings().weight.shape == (1008, 32)
        after = model(ids).logits
    assert after.shape == before.shape
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_output_layer_of_aligned_width_is_left_alone():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=1024, n_positions=64)
    model = transformers.GPT2LMHeadModel(config)
    layer = model.get_output_embeddings()
    assert not align_output_layer(model)
    assert model.get_output_embeddings() is layer


@pytest.mark.parametrize("mode, compiled_part", [(True, "GPT2Block blocks + output layer"),
                                                  ("reduce-overhead", "whole forward")])
def test_compiled_model_gives_the_eager_nll(tiny_gpt2_dir, mode, compiled_part):
    """compile=true compiles each transformer block and the output layer (one graph shared by the blocks); CUDA-graph
    modes compile the whole forward."""
    spec = {"name": "tiny", "name_or_path": str(tiny_gpt2_dir)}
    eager = load_model(spec, LoadOptions(device="cpu", cpu_linear="native"), "causal-lm")
    compiled = load_model(spec, LoadOptions(device="cpu", cpu_linear="native", compile=mode), "causal-lm")
    assert compiled_part in compiled.provenance["compile"]
    tokens = torch.randint(0, 49152, (200,), generator=torch.Generator().manual_seed(3))
    windows = window_schedule(len(tokens), 64, 32)
    expected = score_windows(eager.model, tokens, windows, 4)[0]["nll"].sum()
    got = score_windows(compiled.model, tokens, windows, 4)[0]["nll"].sum()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_hub_model_fingerprint_is_its_pinned_commit(tmp_path, monkeypatch):
    import huggingface_hub

    from evalkit.loading import model_fingerprint

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    spec = {"name": "gpt2", "name_or_path": "openai-community/gpt2"}
    assert model_fingerprint(spec, LoadOptions()) is None  # never downloaded, offline: cannot be pinned
    commit = "a" * 40
    refs = tmp_path / "models--openai-community--gpt2" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)
    assert model_fingerprint(spec, LoadOptions()) == f"hub:openai-community/gpt2@{commit}"
    pinned = {**spec, "revision": "b" * 40}
    assert model_fingerprint(pinned, LoadOptions()) == f"hub:openai-community/gpt2@{'b' * 40}"
