"""Loading-layer speed paths that change how a model runs, never what it computes."""

import importlib.util
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

import evalkit
from evalkit.config.presets import model_spec
from evalkit.errors import EvalkitError
from evalkit.evaluators.perplexity.windows import window_schedule
from evalkit.job.batching import score_in_batches
from evalkit.loading import LoadOptions, fusions, load_fresh, load_model
from evalkit.loading.compiling import GeluEpilogue, compile_regions
from evalkit.loading.kernels import OneDNNLinear, align_output_layer, fuse_tanh_gelu, onednn_dtypes, uses_onednn_linear
from evalkit.loading.options import check_combinations
from evalkit.scoring.rolling import score_windows


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_onednn_linear_gives_the_plain_linear_output(dtype):
    """float32 layers always go through oneDNN's prepacked linear on the CPU; bfloat16 ones only where the CPU has
    bfloat16 instructions (elsewhere oneDNN would emulate them, slower than float32), and then give the plain
    bfloat16 output to bfloat16 rounding."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96).to(dtype)
    swapped = uses_onednn_linear(torch.nn.Sequential(linear), LoadOptions(device="cpu"))
    assert swapped == (dtype in onednn_dtypes()) and (swapped or dtype == torch.bfloat16)
    if swapped:
        x = torch.randn(5, 64).to(dtype)
        tolerance = 1e-6 if dtype == torch.float32 else 2e-2
        assert torch.allclose(OneDNNLinear(linear)(x).float(), linear(x).float(), rtol=tolerance, atol=tolerance)


def test_output_layer_of_aligned_width_is_left_alone():
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=1024, n_positions=64)
    model = transformers.GPT2LMHeadModel(config)
    layer = model.get_output_embeddings()
    assert not align_output_layer(model)
    assert model.get_output_embeddings() is layer


@pytest.mark.parametrize("mode, compiled_part", [("reduce-overhead", "whole forward")])
def test_compiled_model_gives_the_eager_nll(tiny_gpt2_dir, mode, compiled_part):
    """CUDA-graph modes compile the whole forward (compile=true: the runner test below). The compiled graphs are kept
    in EVALKIT_COMPILE_CACHE (conftest points it at a fresh folder) for the next process: this test's among them."""
    graphs = Path(os.environ["EVALKIT_COMPILE_CACHE"]) / "fxgraph"  # Inductor's compiled-graph entries
    kept_before = set(graphs.rglob("*"))
    spec = {"name": "tiny", "name_or_path": str(tiny_gpt2_dir)}
    eager = load_model(spec, LoadOptions(device="cpu", cpu_linear="native"), "causal-lm")
    compiled = load_model(spec, LoadOptions(device="cpu", cpu_linear="native", compile=mode), "causal-lm")
    assert compiled_part in compiled.provenance["compile"]
    tokens = torch.randint(0, 49152, (224,), generator=torch.Generator().manual_seed(3))
    windows = window_schedule(len(tokens), 64, 32)  # 6 full windows, one batch: one shape to compile
    expected = score_windows(eager.model, tokens, windows, 6)[0]["nll"].sum()
    got = score_windows(compiled.model, tokens, windows, 6)[0]["nll"].sum()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    assert set(graphs.rglob("*")) - kept_before, "this test's compiled graphs were not kept"


def test_a_compiled_job_compiles_one_graph_per_region_and_gives_the_eager_nll(tiny_gpt2_dir, tmp_path, capsys):
    """compile=true through the runner: each transformer block and the output layer are compiled (one graph shared by
    the blocks); probes, the lone first window and the last short one run eagerly, so only the batch of full windows
    compiles (block, output layer, NLL: at most 3 graphs, where every odd shape used to compile its own); the NLL is
    eager's; results.json says what compiling cost."""
    text = tmp_path / "text.txt"
    text.write_text(" ".join(f"word{i % 97}" for i in range(400)))
    job = dict(model=str(tiny_gpt2_dir), task="text", **{"task.path": str(text)}, max_length=64, stride=32,
               batch_size=4, device="cpu", cpu_linear="native", cache_dir=None)
    eager = evalkit.evaluate(**job, compile=False)
    capsys.readouterr()
    compiled = evalkit.evaluate(**job, compile=True)
    assert "evalkit: compiling the model (mode default) as its first batches run" in capsys.readouterr().err
    timing = compiled["timing"]
    assert 1 <= timing["graphs_compiled"] <= 3 and timing["compile_seconds"] > 0, timing
    assert "compile_seconds" not in eager["timing"]
    assert "GPT2Block blocks + output layer" in compiled["model"]["compile"]
    assert math.isclose(compiled["metrics"]["nll_sum"], eager["metrics"]["nll_sum"], rel_tol=1e-5)


def tiny_gpt2(seed: int = 0) -> transformers.GPT2LMHeadModel:
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=128)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval()


def test_tanh_gelu_formula_becomes_one_op_with_the_same_output():
    model = tiny_gpt2()
    assert type(model.transformer.h[0].mlp.act).__name__ == "NewGELUActivation"
    ids = torch.randint(0, 1000, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(ids).logits
        assert fuse_tanh_gelu(model) == 2
        after = model(ids).logits
    assert all(type(block.mlp.act) is transformers.activations.GELUTanh for block in model.transformer.h)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def traced_mlp(device: str) -> torch.fx.GraphModule:
    """GPT-2's MLP traced the way dynamo hands it to Inductor (addmm -> view -> gelu), each node's example value on
    `device` as dynamo records it (only the device is read: no CUDA here)."""
    model = tiny_gpt2()
    fuse_tanh_gelu(model)
    traced = torch.fx.symbolic_trace(model.transformer.h[0].mlp)
    for node in traced.graph.nodes:
        node.meta["example_value"] = SimpleNamespace(device=torch.device(device))
    return traced


def call_targets(traced: torch.fx.GraphModule) -> list:
    return [node.target for node in traced.graph.nodes if node.op == "call_function"]


def test_gelu_epilogue_pass_puts_the_gelu_into_the_matmul_on_cuda():
    traced = traced_mlp("cuda")
    addmm = next(node for node in traced.graph.nodes if node.target is torch.addmm)
    matmul_inputs = addmm.args
    GeluEpilogue()(traced.graph)
    assert torch._C._nn.gelu not in call_targets(traced)
    fused = [node for node in traced.graph.nodes if node.target is torch._addmm_activation]
    assert len(fused) == 1 and fused[0].args == matmul_inputs and fused[0].kwargs == {"use_gelu": True}
    assert [user.target for user in fused[0].users] == ["view"]  # the activation's users now read the fused output
    traced.graph.lint()


def test_gelu_epilogue_pass_leaves_cpu_graphs_alone():
    """On CPU `_addmm_activation` computes the exact GELU, not the tanh approximation the model asked for."""
    traced = traced_mlp("cpu")
    before = call_targets(traced)
    GeluEpilogue()(traced.graph)
    assert call_targets(traced) == before and torch._C._nn.gelu in before


def test_compiled_model_with_fused_gelu_and_compiled_nll_gives_the_eager_nll():
    """What compile=true runs on a GPU (the formula GELU swapped, compiled blocks, the compiled NLL), on CPU (where the
    epilogue pass leaves the graph alone, and the weights are frozen into the graphs as constants). A second model of
    the same shape with other weights, compiled in the same process, computes with its own weights: compiled graphs
    with frozen weights are not reused across models."""
    tokens = torch.randint(0, 1000, (224,), generator=torch.Generator().manual_seed(3))
    windows = window_schedule(len(tokens), 64, 32)  # 6 full windows, one batch: one shape to compile
    for seed in (0, 1):
        eager, compiled = tiny_gpt2(seed), tiny_gpt2(seed)
        fuse_tanh_gelu(compiled)
        compile_regions(compiled, None)
        expected = score_windows(eager, tokens, windows, 6)[0]["nll"]
        got = score_windows(compiled, tokens, windows, 6, compile_nll=True)[0]["nll"]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_hub_model_fingerprint_is_its_pinned_commit(tmp_path, monkeypatch):
    import huggingface_hub

    from evalkit.loading import model_fingerprint

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    spec = {"name": "gpt2", "name_or_path": "openai-community/gpt2"}
    assert model_fingerprint(spec) is None  # never downloaded, offline: cannot be pinned
    commit = "a" * 40
    refs = tmp_path / "models--openai-community--gpt2" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text(commit)
    assert model_fingerprint(spec) == f"hub:openai-community/gpt2@{commit}"
    pinned = {**spec, "revision": "b" * 40}
    assert model_fingerprint(pinned) == f"hub:openai-community/gpt2@{'b' * 40}"


def test_gguf_is_dequantized_once_and_its_copy_gives_the_same_figures(tmp_path, monkeypatch):
    """The first float32 load of a GGUF keeps a plain copy (keyed by the file's sha256); the next load reads it."""
    monkeypatch.setenv("EVALKIT_WEIGHTS_CACHE", str(tmp_path))
    spec = model_spec("smollm2-135m")
    first = load_fresh(spec, LoadOptions(device="cpu"), "causal-lm")
    (copy,) = tmp_path.iterdir()
    assert copy.name == first.provenance["weights_sha256"] and "loaded_from" not in first.provenance
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in copy.iterdir()}
    again = load_fresh(spec, LoadOptions(device="cpu"), "causal-lm")
    assert again.provenance["loaded_from"].startswith(str(copy))
    assert again.provenance["gguf_file"] == first.provenance["gguf_file"]  # provenance names the GGUF file
    text = "The tower is 324 metres tall, about the same height as an 81-storey building."
    tokens = torch.tensor(first.tokenizer(text * 4)["input_ids"])
    assert tokens.tolist() == again.tokenizer(text * 4)["input_ids"]
    windows = window_schedule(len(tokens), 64, 32)
    assert torch.equal(score_windows(first.model, tokens, windows, 2)[0]["nll"],
                       score_windows(again.model, tokens, windows, 2)[0]["nll"])


def test_random_init_is_identified_by_its_recipe_not_by_hashing_its_tensors(smol_tokenizer_dir):
    from evalkit.loading import LoadOptions, load_fresh

    spec = {"name": "random-tiny", "architecture": "llama", "tokenizer": {"name_or_path": str(smol_tokenizer_dir)},
            "config": {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "vocab_size": 49152, "max_position_embeddings": 128}}
    first, again, other = (load_fresh(spec, LoadOptions(device="cpu", seed=seed), "causal-lm") for seed in (0, 0, 1))
    assert first.provenance["weights_identified_by"] == "random-init recipe"
    digests = [model.provenance["weights_sha256"] for model in (first, again, other)]
    assert digests[0] == digests[1] != digests[2]
    probe = torch.arange(8)[None]
    with torch.inference_mode():  # the recipe does identify the weights
        assert torch.equal(first.model(input_ids=probe).logits, again.model(input_ids=probe).logits)


def reference_kernels(calls: dict) -> fusions.Kernels:
    """The fused functions written as transformers' Llama computes them, counting their calls: swapped in on the CPU
    in float32, the model must compute bit for bit what it computed before (Liger's own kernels run on GPUs only:
    benchmarks/gpu_llama8b.py --fusions compares their NLL)."""

    def counted(name, function):
        def call(*args):
            calls[name] = calls.get(name, 0) + 1
            return function(*args)
        return call

    def rms_norm(x, weight, eps):
        statistics = x.float()
        return weight * (statistics * torch.rsqrt(statistics.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def rope(q, k, cos, sin):
        def rotated(x):
            half = x.shape[-1] // 2
            return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return q * cos + rotated(q) * sin, k * cos + rotated(k) * sin

    return fusions.Kernels("reference", counted("rms_norm", rms_norm),
                           counted("silu_mul", lambda gate, up: torch.nn.functional.silu(gate) * up),
                           counted("rope", rope))


def test_fused_layers_compute_what_the_model_computed():
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=101)
    torch.manual_seed(0)
    fused, plain = transformers.LlamaForCausalLM(config).eval(), transformers.LlamaForCausalLM(config).eval()
    names = list(fused.state_dict())
    ids = torch.randint(0, 101, (2, 12))
    calls: dict = {}
    with torch.inference_mode():
        before, plain_before = fused(ids).logits, plain(ids).logits
        assert fusions.fuse(fused, reference_kernels(calls)) == {"RMSNorm": 5, "SwiGLU": 2, "RoPE": 2}
        after = fused(ids).logits
        assert calls == {"rms_norm": 5, "silu_mul": 2, "rope": 2}
        assert torch.equal(plain(ids).logits, plain_before) and calls["rope"] == 2  # another model: its own rope
    assert torch.equal(after, before)
    assert list(fused.state_dict()) == names
    fusions.unfuse(fused)  # as before compiling
    assert not any(isinstance(m, (fusions.FusedRMSNorm, fusions.FusedGatedMLP)) or "forward" in vars(m)
                   for m in fused.modules())
    with torch.inference_mode():
        assert torch.equal(fused(ids).logits, before) and calls["rope"] == 2
        for layer in fused.model.layers:  # the rope dispatcher left in the modeling file traces as one graph:
            layer.compile(backend="eager", fullgraph=True)  # a graph break would raise here
        assert torch.equal(fused(ids).logits, before) and calls["rope"] == 2


def test_fused_kernels_touch_only_half_precision_models_on_one_gpu():
    config = transformers.LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=101)
    model = transformers.LlamaForCausalLM(config)
    assert not fusions.fusible(model) and fusions.fuse_if_asked(model, "auto") is None  # float32 on a CPU
    with pytest.raises(EvalkitError, match="fused_kernels=liger applies to Llama/Mistral/Qwen2/Qwen3 models on one"):
        fusions.fuse_if_asked(model, "liger")


@pytest.mark.parametrize("keys, refused", [
    ({"device": "cpu", "compile": True}, "not with compile=true"),
    ({"device": "cpu"}, "not with device=cpu"),
    ({"device": "cuda", "dtype": "float32"}, "not with dtype=float32"),
    ({"device": "cuda", "dtype": "bfloat16", "tp_plan": "auto"}, "not with a model spread over devices or quantized"),
    ({"device": "cuda", "quantization": "int8"}, "not with a model spread over devices or quantized"),
])
def test_fused_kernels_liger_is_refused_before_loading_where_it_cannot_apply(keys, refused):
    with pytest.raises(EvalkitError, match=f"^fused_kernels=liger applies to eager runs on one GPU .*{refused}"):
        check_combinations(LoadOptions(fused_kernels="liger", **keys))


def test_fused_kernels_liger_without_liger_kernel_is_refused_before_loading(monkeypatch):
    real = importlib.util.find_spec  # liger-kernel runs on GPUs only: CI does not install it
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "liger_kernel" else real(name, *rest))
    with pytest.raises(EvalkitError, match=r"fused_kernels=liger needs liger-kernel: pip install 'evalkit\[gpu\]'"):
        check_combinations(LoadOptions(fused_kernels="liger", device="cuda", dtype="bfloat16"))


def test_batches_smaller_than_the_batch_size_run_in_their_own_context():
    entered, seen = [], []

    class Marked:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            entered.pop()

    def score(batch):
        seen.append((len(batch), bool(entered)))
        return batch

    size = score_in_batches(list(range(7)), 3, False, score, lambda batch, result: None,
                            groups=["a"] + ["b"] * 6, smaller=Marked)
    assert size == 3 and seen == [(1, True), (3, False), (3, False)]
