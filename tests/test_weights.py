"""Parity with Hugging Face transformers, checkpoint formats, and the errors a user can act on."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY, perturbed_hf_model, perturbed_model
from gpt2lab import GPT2, CheckpointError, ConfigError, GPT2Config
from gpt2lab.weights import read_safetensors, write_safetensors

TOL = 1e-4  # DESIGN.md: fp32 logits max |delta| <= 1e-4


def random_ids(B: int, T: int, vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def max_delta(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# -- parity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["hf_tiny", "hf_wide"])
@pytest.mark.parametrize("explicit", [False, True])
def test_logits_match_transformers(fixture, explicit, request):
    hf, path = request.getfixturevalue(fixture)
    model = GPT2.from_pretrained(path)
    assert not model.training
    idx = random_ids(2, 64, hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(idx).logits
        model.explicit = explicit
        ours = model(idx)
    assert max_delta(ref, ours) <= TOL


@pytest.mark.parametrize(
    "shape",
    [
        dict(n_layer=3, n_head=2, n_embd=48, vocab_size=300, n_positions=64, n_inner=80),  # odd MLP width
        dict(n_layer=1, n_head=8, n_embd=128, vocab_size=777, n_positions=32, activation_function="gelu"),
        dict(n_layer=2, n_head=4, n_embd=64, vocab_size=500, n_positions=64, tie_word_embeddings=False),
    ],
)
def test_parity_on_more_shapes(shape, tmp_path):
    hf = perturbed_hf_model(seed=3, **shape)
    hf.save_pretrained(tmp_path)
    model = GPT2.from_pretrained(tmp_path)
    assert model.config.tie_word_embeddings == shape.get("tie_word_embeddings", True)
    idx = random_ids(3, 32, shape["vocab_size"])
    with torch.no_grad():
        assert max_delta(hf(idx).logits, model(idx)) <= TOL
        model.explicit = True
        assert max_delta(hf(idx).logits, model(idx)) <= TOL


def test_hidden_states_match_layer_by_layer(hf_wide):
    hf, path = hf_wide
    model = GPT2.from_pretrained(path)
    idx = random_ids(1, 40, hf.config.vocab_size)
    with torch.no_grad():
        ref = hf(idx, output_hidden_states=True).hidden_states  # embeddings, block 0 .. block L-2, ln_f(last)
        _, cache = model.run_with_cache(idx, names=lambda n: n.endswith("resid_post") or n in ("h.0.resid_pre", "ln_f.out"))
    assert max_delta(ref[0], cache["h.0.resid_pre"]) <= TOL
    for layer in range(model.config.n_layer - 1):
        assert max_delta(ref[layer + 1], cache[f"h.{layer}.resid_post"]) <= TOL
    assert max_delta(ref[-1], cache["ln_f.out"]) <= TOL


@pytest.mark.parametrize("fixture", ["hf_tiny", "hf_wide"])
def test_greedy_continuation_identical_to_transformers(fixture, request):
    hf, path = request.getfixturevalue(fixture)
    model = GPT2.from_pretrained(path)
    prompt = random_ids(1, 12, hf.config.vocab_size, seed=4)
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(prompt, 24, temperature=0.0), ref)


def test_kv_cache_steps_match_transformers(hf_wide):
    hf, path = hf_wide
    model = GPT2.from_pretrained(path)
    idx = random_ids(2, 20, hf.config.vocab_size, seed=5)
    with torch.no_grad():
        ref = hf(idx).logits
        cache = model.new_kv_cache(2)
        model(idx[:, :12], kv_cache=cache)
        for t in range(12, 20):
            assert max_delta(model(idx[:, t : t + 1], kv_cache=cache)[:, 0], ref[:, t]) <= TOL


# -- formats -------------------------------------------------------------------------------------


def test_save_then_transformers_loads_the_same_logits(hf_tiny, tmp_path):
    from transformers import GPT2LMHeadModel

    _, path = hf_tiny
    model = GPT2.from_pretrained(path)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = random_ids(2, 30, TINY["vocab_size"])
    with torch.no_grad():
        assert max_delta(back(idx).logits, model(idx)) <= TOL
    assert torch.equal(GPT2.from_pretrained(tmp_path)(idx), model(idx))  # and back into ours, bit for bit


def test_random_model_of_ours_round_trips_through_transformers(tmp_path):
    from transformers import GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16, bias=False, qkv_bias=False,
                     tie_word_embeddings=False)
    model = perturbed_model(cfg)
    model.save_pretrained(tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()  # zeros stand in for the missing biases
    idx = random_ids(1, 16, 64)
    with torch.no_grad():
        assert max_delta(hf(idx).logits, model(idx)) <= TOL
    again = GPT2.from_pretrained(tmp_path)
    assert again.config == cfg
    assert torch.equal(again(idx), model(idx))


def test_checkpoint_without_transformer_prefix(hf_tiny, tmp_path):
    """GPT2Model checkpoints (the original `gpt2` hub repository is one) store `h.0...`, no prefix."""
    hf, path = hf_tiny
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if not k.startswith("lm_head")}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 128, 128))  # the old mask buffer: ignored
    write_safetensors(tmp_path / "model.safetensors", list(state.items()))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    model = GPT2.from_pretrained(tmp_path)
    idx = random_ids(1, 20, TINY["vocab_size"])
    with torch.no_grad():
        assert max_delta(hf(idx).logits, model(idx)) <= TOL


def test_sharded_checkpoints_from_transformers_and_from_us(hf_tiny, tmp_path):
    hf, path = hf_tiny
    hf.save_pretrained(tmp_path / "hf", max_shard_size="100KB")
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "hf").glob("model-*.safetensors"))) > 1
    model = GPT2.from_pretrained(tmp_path / "hf")
    idx = random_ids(1, 20, TINY["vocab_size"])
    with torch.no_grad():
        assert max_delta(hf(idx).logits, model(idx)) <= TOL
    model.save_pretrained(tmp_path / "ours", max_shard_size="100KB")
    shards = sorted(p.name for p in (tmp_path / "ours").glob("model-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "ours" / "model.safetensors").exists()
    from transformers import GPT2LMHeadModel

    back = GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert max_delta(back(idx).logits, model(idx)) <= TOL


def test_pytorch_bin_checkpoint_loads_with_weights_only(hf_tiny, tmp_path):
    hf, path = hf_tiny
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    model = GPT2.from_pretrained(tmp_path)
    idx = random_ids(1, 20, TINY["vocab_size"])
    with torch.no_grad():
        assert max_delta(hf(idx).logits, model(idx)) <= TOL


def test_pickle_with_code_is_refused(tmp_path, hf_tiny):
    _, path = hf_tiny

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="cannot read"):
        GPT2.from_pretrained(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_dtype_and_device_arguments(hf_tiny):
    _, path = hf_tiny
    model = GPT2.from_pretrained(path, dtype="bf16", device="cpu")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.lm_head.weight is model.transformer.wte.weight
    ref = GPT2.from_pretrained(path)
    idx = random_ids(1, 10, TINY["vocab_size"])
    assert max_delta(model(idx).float(), ref(idx)) < 0.5  # bf16 is close, not exact
    with pytest.raises(ConfigError, match="dtype"):
        GPT2.from_pretrained(path, dtype="int3")


def test_our_safetensors_files_are_standard(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2, 3).to(torch.bfloat16),
               "t": torch.randn(4, 6).t(), "empty": torch.zeros(0, 3)}
    write_safetensors(tmp_path / "ours.safetensors", list(tensors.items()))
    with safe_open(tmp_path / "ours.safetensors", "pt") as f:
        for name, t in tensors.items():
            assert torch.equal(f.get_tensor(name), t)
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_path / "theirs.safetensors")
    ours = read_safetensors(tmp_path / "theirs.safetensors")
    assert ours.keys() == tensors.keys()
    for name, t in ours.items():
        assert torch.equal(t, tensors[name])


def test_hub_cache_is_used_offline(hf_tiny, tmp_path):
    """A hub id resolves from the huggingface_hub cache when HF_HUB_OFFLINE=1 (no network needed)."""
    _, path = hf_tiny
    snapshot = tmp_path / "hub" / "models--someone--tiny-gpt2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for f in path.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (tmp_path / "hub" / "models--someone--tiny-gpt2" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-gpt2" / "refs" / "main").write_text("abc123")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    code = "from gpt2lab import GPT2; m = GPT2.from_pretrained('someone/tiny-gpt2'); print(m.config.n_embd)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(TINY["n_embd"])


# -- errors ----------------------------------------------------------------------------------------


def copy_checkpoint(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        GPT2.from_pretrained(str(tmp_path / "nope" / "deeper"))
    with pytest.raises(CheckpointError, match="no config.json"):
        GPT2.from_pretrained(tmp_path)
    GPT2Config(n_layer=1, n_head=1, n_embd=4, vocab_size=5, block_size=4).to_json_file(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no weights"):
        GPT2.from_pretrained(tmp_path)


def test_a_training_runs_directory_stands_for_the_model_it_saved(tmp_path):
    """``--model run/`` (what ``train --out`` was given) loads run/model, its weights and its own tokenizer;
    the other commands and ``--init`` go through the same two functions."""
    from gpt2lab.cli import main
    from gpt2lab.tokenizer import Tokenizer

    run = tmp_path / "run"
    tokenizer = Tokenizer.train("the cat sat on the mat, the dog sat on the log. " * 40, 300, progress=False)
    torch.manual_seed(0)
    saved = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=tokenizer.n_vocab, block_size=32)).eval()
    saved.save_pretrained(run / "model")
    tokenizer.save(run / "model")
    (run / "checkpoint.pt").write_bytes(b"")  # what else a run holds; not read here
    loaded = GPT2.from_pretrained(run)
    for (name, a), b in zip(saved.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    assert Tokenizer.from_pretrained(run).mergeable_ranks == tokenizer.mergeable_ranks  # not GPT-2's
    assert main(["generate", "--model", str(run), "--prompt", "the cat", "--max-new-tokens", "2", "--seed", "0"]) == 0
    (run / "model" / "config.json").unlink()  # no model saved yet: the run directory is no checkpoint
    with pytest.raises(CheckpointError, match=f"{run} has no config.json"):
        GPT2.from_pretrained(run)


def test_building_shapes_draws_nothing_and_a_real_model_draws_each_weight_once(tmp_path):
    """from_pretrained builds on meta: no layer may draw there (nn.Embedding's draw on meta imports torch._dynamo,
    a second of every load's start-up; checked in a fresh process). A real model draws each weight once,
    the tied head included, and is built where a ``with torch.device`` block says."""
    code = ("import sys, torch\nfrom gpt2lab import GPT2, GPT2Config\nwith torch.device('meta'):\n"
            "    m = GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64, block_size=8))\n"
            "assert m.transformer.wte.weight.is_meta\nprint('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    torch.manual_seed(0)
    model = GPT2(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, block_size=128))
    assert model.lm_head.weight is model.transformer.wte.weight and model.transformer.wte.weight.device.type == "cpu"
    assert model.transformer.h[0].attn.c_attn.weight.stride() == (1, model.transformer.h[0].attn.c_attn.weight.shape[0])  # Conv1D order kept
    torch.manual_seed(0)
    first = torch.empty(model.transformer.wte.weight.shape).normal_(0.0, model.config.initializer_range)
    torch.testing.assert_close(model.transformer.wte.weight.detach(), first, rtol=0, atol=0)  # the first draw, kept


def test_truncated_safetensors(hf_tiny, tmp_path):
    d = copy_checkpoint(hf_tiny[1], tmp_path / "ck")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        GPT2.from_pretrained(d)


def test_corrupted_safetensors_header(hf_tiny, tmp_path):
    d = copy_checkpoint(hf_tiny[1], tmp_path / "ck")
    data = bytearray((d / "model.safetensors").read_bytes())
    data[10:30] = b"\x00garbage!garbage!\xff\xfe\x00"
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        GPT2.from_pretrained(d)
    (d / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_safetensors(d / "model.safetensors")


def test_shape_mismatch_names_tensor_and_shapes(hf_tiny, tmp_path):
    d = copy_checkpoint(hf_tiny[1], tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg["n_inner"] = 100  # the weights have 4 * 64 = 256
    (d / "config.json").write_text(json.dumps(cfg))
    expected = (r"shape mismatch for transformer\.h\.0\.mlp\.c_fc\.(weight|bias): "
                r"the checkpoint has \((64, )?256,?\), the model expects \((64, )?100,?\)")
    with pytest.raises(CheckpointError, match=expected):
        GPT2.from_pretrained(d)


def test_missing_and_unexpected_keys_are_listed(hf_tiny, tmp_path):
    hf, path = hf_tiny
    state = dict(hf.state_dict())
    del state["transformer.h.1.ln_2.weight"]
    state["transformer.h.0.extra.weight"] = torch.ones(3)
    state.pop("lm_head.weight")
    d = tmp_path / "ck"
    d.mkdir()
    write_safetensors(d / "model.safetensors", list(state.items()))
    (d / "config.json").write_text((path / "config.json").read_text())
    expected = r"missing 1 tensor\(s\): transformer\.h\.1\.ln_2\.weight.*unexpected 1 tensor\(s\): transformer\.h\.0\.extra\.weight"
    with pytest.raises(CheckpointError, match=expected):
        GPT2.from_pretrained(d)


def test_unsupported_config_is_refused_on_load(hf_tiny, tmp_path):
    d = copy_checkpoint(hf_tiny[1], tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg["scale_attn_by_inverse_layer_idx"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        GPT2.from_pretrained(d)


def test_unknown_hub_id_offline_is_one_clear_error():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = "from gpt2lab import GPT2\nGPT2.from_pretrained('nobody-at-all/no-such-gpt2')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "CheckpointError: could not get 'nobody-at-all/no-such-gpt2' from the Hugging Face hub" in out.stderr


def test_save_is_atomic_and_leaves_no_temp_files(hf_tiny, tmp_path):
    model = GPT2.from_pretrained(hf_tiny[1])
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # overwriting an existing save
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_saved_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        GPT2(GPT2Config(n_layer=1, n_head=1, n_embd=4, vocab_size=5, block_size=4)).save_pretrained(tmp_path)
    finally:
        os.umask(old)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in ("config.json", "model.safetensors")} == {"0o644"}


def test_loaded_parameters_are_copy_on_write_views_of_the_file(hf_tiny, tmp_path):
    """CPU loads map the safetensors file privately: training the model never writes to the checkpoint."""
    d = copy_checkpoint(hf_tiny[1], tmp_path / "ck")
    before = (d / "model.safetensors").read_bytes()
    model = GPT2.from_pretrained(d)
    idx = random_ids(2, 16, TINY["vocab_size"])
    reference = model(idx).detach().clone()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, loss = model(idx, idx)
    loss.backward()
    opt.step()
    assert not torch.equal(model.eval()(idx), reference)  # the model did change
    assert (d / "model.safetensors").read_bytes() == before  # the file did not
    assert torch.equal(GPT2.from_pretrained(d)(idx), reference)
    torch.save(model.state_dict(), tmp_path / "sd.pt")  # mapped tensors save and load like any others
    again = GPT2(model.config).eval()
    again.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    assert torch.equal(again(idx), model(idx))
