"""LoRA: adapters that start as the identity, count what they should, merge into the same function
(through every inference path), load in PEFT with the merged model's logits, keep the hook points,
train with the base frozen and resume exactly, from Python and from the command line."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, perturbed_hf_model, perturbed_model
from gpt2lab import GPT2, GPT2Config, kernels
from gpt2lab.data import save_tokens
from gpt2lab.errors import CheckpointError, ConfigError
from gpt2lab.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_layers,
    lora_state_dict,
    merge_lora,
    merged_copy,
    save_adapter,
    trainable_parameters,
)
from gpt2lab.train import TrainConfig, load_checkpoint, train
from test_train import cli, config, losses

CONFIG = GPT2Config(n_layer=TINY["n_layer"], n_head=TINY["n_head"], n_embd=TINY["n_embd"], vocab_size=TINY["vocab_size"],
                    block_size=TINY["n_positions"])
IDS = torch.tensor([[5, 17, 300, 42, 999, 0, 7, 123], [1, 2, 3, 4, 5, 6, 7, 8]])


def adapted(rank: int = 4, alpha: float = 8.0, targets=("c_attn", "c_proj", "c_fc"), seed: int = 0) -> GPT2:
    """A perturbed tiny model with adapters whose B is random (as after some training), eval mode."""
    model = apply_lora(perturbed_model(CONFIG, seed=seed), rank, alpha, targets)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.normal_(0.0, 0.2)
    return model.eval()


def peft_model(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    return PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base_dir), str(adapter_dir)).eval()


def peft_adapter(hf, directory, base: str | None, seed: int = 2, rank: int = 2, targets=("c_attn", "c_proj"), safe: bool = True):
    """An adapter PEFT writes itself (random B, so it changes the function), naming ``base``; returns PEFT's model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft = get_peft_model(copy.deepcopy(hf), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), fan_in_fan_out=True,
                                                        task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    peft.save_pretrained(directory, safe_serialization=safe)  # (safe=False: adapter_model.bin, as PEFT wrote before safetensors)
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    (directory / ADAPTER_CONFIG).write_text(json.dumps({**config, "base_model_name_or_path": base}))
    return peft.eval()


# -- the module ---------------------------------------------------------------------------------------


def test_adapters_start_as_the_base_model_and_only_they_train():
    model = perturbed_model(CONFIG)
    with torch.no_grad():
        before = model(IDS)
    apply_lora(model, rank=4)
    with torch.no_grad():
        assert torch.equal(model(IDS), before)  # B = 0: the adapted model starts where the base was
    C, L, r = CONFIG.n_embd, CONFIG.n_layer, 4
    # per block: c_attn C -> 3C, attn.c_proj C -> C, c_fc C -> 4C, mlp.c_proj 4C -> C; each adapter r (in + out)
    expected = L * r * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert trainable_parameters(model) == (expected, model.num_parameters())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(lora_state_dict(model))
    layer = model.transformer.h[1].attn.c_attn
    assert isinstance(layer, LoRALinear) and layer.lora_A.weight.shape == (r, C) and layer.lora_B.weight.shape == (3 * C, r)
    assert not layer.lora_B.weight.any() and layer.lora_A.weight.abs().max() <= 1 / C**0.5  # kaiming-uniform(a=sqrt 5): bound 1/sqrt(in)
    # targets follow PEFT's rule: a module's name or a dotted suffix of its path
    only = apply_lora(perturbed_model(CONFIG), rank=2, targets="attn.c_proj")
    assert sorted(lora_layers(only)) == [f"transformer.h.{i}.attn.c_proj" for i in range(L)]
    assert trainable_parameters(only)[0] == L * 2 * (C + C)


def test_settings_are_checked():
    model = perturbed_model(CONFIG)
    for kwargs, message in [(dict(rank=0), "rank must be a positive integer"), (dict(rank=2, alpha=0), "alpha must be positive"),
                            (dict(rank=2, targets=("c_attn", "q_proj")), "unknown LoRA target 'q_proj'; choose from c_attn, c_proj, c_fc"),
                            (dict(rank=2, dropout=1.0), "dropout must be in"), (dict(rank=2, targets=()), "no LoRA targets")]:
        with pytest.raises(ConfigError, match=message):
            apply_lora(model, **kwargs)
    apply_lora(model, 2)
    with pytest.raises(ConfigError, match="already carries LoRA adapters"):
        apply_lora(model, 2)


def test_merged_model_computes_the_adapted_function():
    model = adapted()
    base = perturbed_model(CONFIG)
    with torch.no_grad():
        want = model(IDS)
        assert (want - base(IDS)).abs().max() > 0.1  # the adapters matter
        copied = merged_copy(model)
        assert not lora_layers(copied) and lora_layers(model)  # the adapted model is left as it was
        assert torch.allclose(copied(IDS), want, atol=1e-5)
        merged = merge_lora(copy.deepcopy(model))
        assert type(merged.transformer.h[0].mlp.c_fc) is not LoRALinear and all(p.requires_grad for p in merged.parameters())
        assert torch.allclose(merged(IDS), want, atol=1e-5)
    # the merged weight keeps our Conv1D memory order, and the adapter-aware .weight is what the layer applies
    w = merged.transformer.h[0].attn.c_attn.weight  # (3C, C)
    assert w.stride() == (1, 3 * CONFIG.n_embd) and w.t().is_contiguous()
    assert torch.allclose(model.transformer.h[0].attn.c_attn.weight, w, atol=1e-6)
    assert torch.equal(copied.transformer.wte.weight, model.transformer.wte.weight)


def test_inference_paths_include_the_adapters():
    """generate (KV cache, packed CPU weights, the static decoder) runs through the adapters: the same
    tokens as the merged model, and the packed products give the adapted logits."""
    model = adapted()
    merged = merged_copy(model)
    prompt = IDS[:1, :4]
    with torch.no_grad():
        want = model(IDS)
        with kernels.packed(model, force=True) as packed_bytes:
            got = model(IDS)
    if packed_bytes:  # this CPU's oneDNN packs: the base products took the packed path
        assert any(kernels.is_packed(layer.base_layer) for layer in lora_layers(model).values())
    assert torch.allclose(got, want, atol=1e-5)
    greedy = merged.generate(prompt, 12, temperature=0)
    assert torch.equal(model.generate(prompt, 12, temperature=0), greedy)
    assert torch.equal(model.generate(prompt, 12, temperature=0, static_cache=True), greedy)
    plain = perturbed_model(CONFIG).generate(prompt, 12, temperature=0)
    assert not torch.equal(plain, greedy)  # so the comparison above can tell the adapters apart


def test_hook_points_see_the_adapted_activations():
    model = adapted()
    merged = merged_copy(model)
    logits, cache = model.run_with_cache(IDS)
    want_logits, want = merged.run_with_cache(IDS)
    assert set(cache) == set(want) == set(model.hook_names())
    assert all(torch.allclose(cache[n], want[n], atol=1e-5) for n in want) and torch.allclose(logits, want_logits, atol=1e-5)
    c_fc = model.transformer.h[0].mlp.c_fc
    x = model.transformer.h[0].ln_2(cache["h.0.resid_mid"])
    assert torch.allclose(cache["h.0.mlp.pre"], c_fc(x), atol=1e-6)
    assert not torch.allclose(cache["h.0.mlp.pre"], c_fc.base_layer(x), atol=1e-3)  # the adapter is in what the hook sees

    def zero_head_1(z, name):
        z = z.clone()
        z[:, 1] = 0
        return z

    with torch.no_grad(), model.hooks({"h.1.attn.z": zero_head_1}), merged.hooks({"h.1.attn.z": zero_head_1}):
        assert torch.allclose(model(IDS), merged(IDS), atol=1e-5) and not torch.allclose(model(IDS), logits, atol=1e-3)


# -- PEFT's format ------------------------------------------------------------------------------------


def test_peft_loads_our_adapter_with_the_merged_logits(hf_tiny, tmp_path):
    _, base_dir = hf_tiny
    for targets in (("c_attn", "c_proj", "c_fc"), ("attn.c_proj", "c_fc")):
        torch.manual_seed(3)
        model = apply_lora(GPT2.from_pretrained(base_dir), 4, 16, targets).eval()
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B.weight.normal_(0.0, 0.2)  # (out, r): an orientation mistake cannot hide behind zeros
        out = save_adapter(model, tmp_path / "-".join(targets), base_model_name_or_path=str(base_dir))
        config = json.loads((out / ADAPTER_CONFIG).read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16 and config["fan_in_fan_out"] is True
        from safetensors import safe_open

        with safe_open(out / ADAPTER_WEIGHTS, "pt") as f:
            keys = set(f.keys())
            assert f.get_tensor("base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight").shape == (4 * TINY["n_embd"], 4)
        assert "base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight" in keys
        with torch.no_grad():
            want = merged_copy(model)(IDS)
            got = peft_model(base_dir, out)(IDS).logits
            assert (got - want).abs().max() <= 1e-4
            assert (got - GPT2.from_pretrained(base_dir)(IDS)).abs().max() > 0.1
            # and the files read back into a fresh model
            again = load_adapter(GPT2.from_pretrained(base_dir), out).eval()
            assert torch.equal(again(IDS), model(IDS))


def test_an_adapter_peft_wrote_loads_here(hf_tiny, tmp_path):
    hf, base_dir = hf_tiny
    peft = peft_adapter(hf, tmp_path / "peft", str(base_dir), seed=1, rank=3, targets=("c_attn", "c_fc"))
    ours = load_adapter(GPT2.from_pretrained(base_dir), tmp_path / "peft").eval()
    with torch.no_grad():
        assert (ours(IDS) - peft(IDS).logits).abs().max() <= 1e-4
    assert sorted({n.split(".", 3)[3] for n in lora_layers(ours)}) == ["attn.c_attn", "mlp.c_fc"]


# -- training -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Tokens of the tiny model's vocabulary: counting runs, so a few steps move the adapters."""
    path = tmp_path_factory.mktemp("lora_data")
    rng = np.random.default_rng(0)
    runs = [(rng.integers(TINY["vocab_size"]) + np.arange(rng.integers(4, 12))) % TINY["vocab_size"] for _ in range(500)]
    ids = np.concatenate(runs)
    save_tokens(path, ids[:3000], ids[3000:3600], n_vocab=TINY["vocab_size"])
    return path


def lora_config(data, out, init, **kw) -> TrainConfig:
    """test_train's small run, fine-tuning ``init`` with rank-4 adapters (no scratch shape: the base has its own)."""
    base = dict(data=data, out=out, init=str(init), block_size=16, batch_size=4, max_steps=6, eval_every=3, eval_batches=2,
                checkpoint_every=3, lr=1e-2, warmup_steps=2, progress=False, seed=0, lora_rank=4, lora_alpha=8)
    return TrainConfig(**{**base, **kw})


def test_lora_run_freezes_the_base_and_writes_model_and_adapter(hf_tiny, tiny_data, tmp_path):
    _, base_dir = hf_tiny
    run = tmp_path / "run"
    result = train(lora_config(tiny_data, run, base_dir, max_steps=4, lora_targets="c_attn,c_fc"))
    base = GPT2.from_pretrained(base_dir)
    tuned = result.model
    # every base tensor bit for bit as loaded; the adapters moved
    state = {k.replace(".base_layer.", "."): v for k, v in tuned.state_dict().items() if ".lora_" not in k}
    assert state.keys() == base.state_dict().keys() and all(torch.equal(v, base.state_dict()[k]) for k, v in state.items())
    adapters = lora_state_dict(tuned)
    assert all(adapters[k].any() for k in adapters if ".lora_B." in k)
    # the checkpoint holds the adapters only; model/ is the merged plain GPT-2; adapter/ loads in PEFT
    ckpt = load_checkpoint(run)
    assert set(ckpt["model"]) == set(adapters) and ckpt["lora_base"]
    merged = GPT2.from_pretrained(run / "model")
    with torch.no_grad():
        assert torch.allclose(merged(IDS), tuned(IDS), atol=1e-5)
        assert (peft_model(base_dir, run / "adapter")(IDS).logits - merged(IDS)).abs().max() <= 1e-4
    config_json = json.loads((run / "adapter" / ADAPTER_CONFIG).read_text())
    assert config_json["target_modules"] == ["attn.c_attn", "mlp.c_fc"] and config_json["base_model_name_or_path"] == str(base_dir)


def test_lora_resume_is_exact(hf_tiny, tiny_data, tmp_path):
    _, base_dir = hf_tiny
    # dropout in the adapters, so the resumed run must also restore the RNG exactly
    kw = dict(max_steps=6, lr_decay_steps=6, lora_dropout=0.1, checkpoint_every=3, eval_every=3)
    train(lora_config(tiny_data, tmp_path / "full", base_dir, **kw))
    train(lora_config(tiny_data, tmp_path / "split", base_dir, **{**kw, "max_steps": 3}))
    train(lora_config(tiny_data, tmp_path / "split", base_dir, **kw, resume=True))
    assert len(losses(tmp_path / "full")) == 6 and losses(tmp_path / "split") == losses(tmp_path / "full")
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "split")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for i in a["optimizer"]["state"] for x, y in
               zip(a["optimizer"]["state"][i].values(), b["optimizer"]["state"][i].values()))


def test_lora_with_a_padded_vocabulary_runs_the_same(hf_tiny, tiny_data, tmp_path):
    _, base_dir = hf_tiny
    train(lora_config(tiny_data, tmp_path / "plain", base_dir, max_steps=3, pad_vocab=1))
    train(lora_config(tiny_data, tmp_path / "padded", base_dir, max_steps=3, pad_vocab=64))
    assert losses(tmp_path / "padded") == pytest.approx(losses(tmp_path / "plain"), abs=1e-5)
    a, b = GPT2.from_pretrained(tmp_path / "plain" / "model"), GPT2.from_pretrained(tmp_path / "padded" / "model")
    with torch.no_grad():
        assert b.config.vocab_size == TINY["vocab_size"] and torch.allclose(a(IDS), b(IDS), atol=1e-4)


def test_resume_refuses_a_changed_base(hf_tiny, tiny_data, tmp_path):
    _, base_dir = hf_tiny
    own = tmp_path / "base"
    shutil.copytree(base_dir, own)
    train(lora_config(tiny_data, tmp_path / "run", own, max_steps=2))
    perturbed_hf_model(seed=7, **TINY).save_pretrained(own)
    with pytest.raises(CheckpointError, match="no longer the model this LoRA run began from"):
        train(lora_config(tiny_data, tmp_path / "run", own, max_steps=3, resume=True))


def test_lora_settings_in_train_config(tiny_data, hf_tiny, tmp_path):
    _, base_dir = hf_tiny
    with pytest.raises(ConfigError, match="--lora-rank needs --init"):
        train(config(tiny_data, tmp_path / "r", lora_rank=4))
    with pytest.raises(ConfigError, match="--lora-alpha applies to LoRA runs only"):
        train(config(tiny_data, tmp_path / "r", init=str(base_dir), lora_alpha=8))
    with pytest.raises(ConfigError, match="unknown LoRA target 'c_attnn'"):
        train(lora_config(tiny_data, tmp_path / "r", base_dir, lora_targets=("c_attnn",)))


@pytest.mark.slow
def test_cli_lora_end_to_end_and_mistakes(hf_tiny, tiny_data, tmp_path):
    _, base_dir = hf_tiny
    common = ["--data", tiny_data, "--init", base_dir, "--block-size", 16, "--batch-size", 4, "--max-steps", 2, "--eval-every", 2,
              "--eval-batches", 1, "--lr", "1e-2"]
    r = cli("train", "--out", tmp_path / "run", *common, "--lora-rank", 4, "--lora-alpha", 8, "--lora-targets", "c_attn,c_proj")
    assert r.returncode == 0, r.stderr
    assert "adapter in" in r.stdout and "LoRA rank 4, alpha 8 on attn.c_attn, attn.c_proj, mlp.c_proj: training" in r.stdout + r.stderr
    assert {p.name for p in (tmp_path / "run" / "adapter").iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    r = cli("train", "--out", tmp_path / "run", *common[:-4], "--max-steps", 3, "--quiet", "--resume")  # resumes as a LoRA run
    assert r.returncode == 0, r.stderr
    assert set(load_checkpoint(tmp_path / "run")["model"]) == set(lora_state_dict(load_adapter(GPT2.from_pretrained(base_dir),
                                                                                                 tmp_path / "run" / "adapter")))
    for extra, message in [(["--lora-rank", 0], "LoRA rank must be a positive integer, got 0"),
                           (["--lora-rank", 4, "--lora-targets", "c_attn,q_proj"], "unknown LoRA target 'q_proj'"),
                           (["--lora-alpha", 16], "--lora-alpha applies to LoRA runs only")]:
        r = cli("train", "--out", tmp_path / "bad", *common, "--quiet", *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    r = cli("train", "--out", tmp_path / "bad", "--data", tiny_data, "--lora-rank", 4, "--quiet")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--lora-rank needs --init" in r.stderr


# -- an adapter where a model is asked for ------------------------------------------------------------


def test_an_adapter_loads_as_its_merged_model(hf_tiny, tiny_data, tmp_path):
    """``GPT2.from_pretrained`` (and so every ``--model``) takes a PEFT adapter: the base it names, the adapter
    folded in. Its tokenizer is the base's; an adapter on an adapter (a LoRA run from one) unrolls."""
    from gpt2lab import Tokenizer

    hf, base_dir = hf_tiny
    base = tmp_path / "base"  # the base with a tokenizer of its own, of the tiny model's 1,000 ids
    shutil.copytree(base_dir, base)
    tok = Tokenizer.train(["the cat sat on the mat and the dog ran to the park " * 40 + "".join(chr(c) for c in range(256, 2000))], 1000,
                          progress=False)
    tok.save(base)
    peft = peft_adapter(hf, tmp_path / "adapter", str(base))
    torch.manual_seed(11)
    model = GPT2.from_pretrained(tmp_path / "adapter")
    drawn_after = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(drawn_after, torch.rand(3))  # loading drew nothing from the caller's random state
    assert not lora_layers(model) and not model.training
    with torch.no_grad():
        assert (model(IDS) - peft(IDS).logits).abs().max() <= 1e-4
        assert (model(IDS) - GPT2.from_pretrained(base)(IDS)).abs().max() > 1e-2  # the adapter changed the function
    assert Tokenizer.from_pretrained(tmp_path / "adapter").mergeable_ranks == tok.mergeable_ranks
    # a LoRA run from an adapter (on the tokenizer-less base: the data are bare ids): the run's own adapter names that one
    # (an absolute path), and loads as the run's merged model
    peft_adapter(hf, tmp_path / "plain_adapter", str(base_dir))
    run = tmp_path / "run"
    train(lora_config(tiny_data, run, tmp_path / "plain_adapter", max_steps=2))
    assert json.loads((run / "adapter" / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == str((tmp_path / "plain_adapter").resolve())
    with torch.no_grad():
        assert (GPT2.from_pretrained(run / "adapter")(IDS) - GPT2.from_pretrained(run / "model")(IDS)).abs().max() <= 1e-4
    # from the command line: an adapter wherever a model goes
    r = cli("generate", "--model", tmp_path / "adapter", "--prompt", "the cat", "--max-new-tokens", 4, "--temperature", 0, "--device", "cpu")
    assert r.returncode == 0 and r.stdout.startswith("the cat"), r.stderr
    expected = tok.decode(GPT2.from_pretrained(tmp_path / "adapter").generate(torch.tensor([tok.encode("the cat")]), 4,
                                                                               temperature=0.0)[0].tolist())
    assert r.stdout.strip() == expected.strip()


def test_adapter_mistakes(hf_tiny, tmp_path):
    from gpt2lab.classify import GPT2Classifier
    from gpt2lab.weights import resolve_checkpoint_dir

    hf, base_dir = hf_tiny
    peft_adapter(hf, tmp_path / "lost", str(tmp_path / "moved-away"))
    with pytest.raises(CheckpointError, match=r"the base model of the adapter in .*lost \('.*moved-away', its base_model_name_or_path\): "
                                              r"no such checkpoint directory"):
        GPT2.from_pretrained(tmp_path / "lost")
    peft_adapter(hf, tmp_path / "nameless", None)
    with pytest.raises(CheckpointError, match="names no base model"):
        GPT2.from_pretrained(tmp_path / "nameless")
    peft_adapter(hf, tmp_path / "fine", str(base_dir))
    peft_adapter(hf, tmp_path / "pickled", str(base_dir), safe=False)  # the same adapter in an older PEFT's pickle
    assert (tmp_path / "pickled" / "adapter_model.bin").is_file() and not (tmp_path / "pickled" / ADAPTER_WEIGHTS).exists()
    with torch.no_grad():
        assert torch.equal(GPT2.from_pretrained(tmp_path / "pickled")(IDS), GPT2.from_pretrained(tmp_path / "fine")(IDS))
    (tmp_path / "pickled" / "adapter_model.bin").unlink()
    with pytest.raises(CheckpointError, match="has no adapter weights: expected adapter_model.safetensors"):
        GPT2.from_pretrained(tmp_path / "pickled")
    for load in (resolve_checkpoint_dir, GPT2Classifier.from_pretrained):  # what needs a whole model says so
        with pytest.raises(CheckpointError, match="is a LoRA adapter .*not a whole model"):
            load(tmp_path / "fine")
    r = cli("explain", "--model", tmp_path / "fine")  # the shape is the base's
    assert r.returncode == 0 and f"checkpoint {tmp_path / 'fine'}" in r.stdout, r.stderr


def test_an_adapter_from_the_hub_cache(hf_tiny, tmp_path):
    """A hub id naming an adapter (here from the local cache, offline) loads like its directory: the base it names,
    also a hub id, with the adapter merged in; its tokenizer is the base's."""
    import os
    import subprocess
    import sys

    from gpt2lab import Tokenizer

    hf, base_dir = hf_tiny
    hub = tmp_path / "hub"
    tok = Tokenizer.train(["a tiny corpus for a tiny vocabulary " * 30 + "".join(chr(c) for c in range(256, 1500))], 1000, progress=False)

    def cached(repo: str, fill) -> Path:
        snapshot = hub / f"models--someone--{repo}" / "snapshots" / "c0ffee"
        fill(snapshot)
        (hub / f"models--someone--{repo}" / "refs").mkdir()
        (hub / f"models--someone--{repo}" / "refs" / "main").write_text("c0ffee")
        return snapshot

    cached("tiny-base", lambda d: (shutil.copytree(base_dir, d), tok.save(d)))
    adapter = cached("tiny-lora", lambda d: peft_adapter(hf, d, "someone/tiny-base"))
    code = ("import torch; from gpt2lab import GPT2, Tokenizer; m = GPT2.from_pretrained('someone/tiny-lora'); "
            f"print(m(torch.tensor({IDS.tolist()})).sum().item()); print(len(Tokenizer.from_pretrained('someone/tiny-lora').mergeable_ranks))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    total, ranks = out.stdout.split()
    with torch.no_grad():
        expected = merge_lora(load_adapter(GPT2.from_pretrained(base_dir), adapter))(IDS).sum().item()
    assert float(total) == pytest.approx(expected, rel=1e-5) and int(ranks) == len(tok.mergeable_ranks) != 50257
