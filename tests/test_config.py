import json

import pytest
import torch

from gpt2lab import GPT2, ConfigError, GPT2Config
from gpt2lab.config import PRESETS, parameter_counts


def build_on_meta(config: GPT2Config) -> GPT2:
    with torch.device("meta"):  # shapes only: counting needs no memory
        return GPT2(config)


@pytest.mark.parametrize(
    "name, n_layer, n_head, n_embd, total",
    [
        ("gpt2", 12, 12, 768, 124_439_808),
        ("gpt2-medium", 24, 16, 1024, 354_823_168),
        ("gpt2-large", 36, 20, 1280, 774_030_080),
        ("gpt2-xl", 48, 25, 1600, 1_557_611_200),
    ],
)
def test_presets_and_parameter_counts(name, n_layer, n_head, n_embd, total):
    cfg = GPT2Config.from_preset(name)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.block_size) == (n_layer, n_head, n_embd, 50257, 1024)
    assert cfg.head_dim == 64 and cfg.mlp_dim == 4 * n_embd
    assert parameter_counts(cfg)["total"] == total
    assert build_on_meta(cfg).num_parameters() == total


@pytest.mark.parametrize(
    "overrides, total",
    [({"tie_word_embeddings": False}, 163_037_184), ({"tie_word_embeddings": False, "qkv_bias": False}, 163_009_536)],
)
def test_untied_and_bias_free_counts(overrides, total):
    cfg = GPT2Config.from_preset("gpt2", **overrides)
    assert parameter_counts(cfg)["total"] == total
    assert build_on_meta(cfg).num_parameters() == total


def test_counts_match_built_model_for_odd_shapes():
    cfg = GPT2Config(n_layer=3, n_head=2, n_embd=20, vocab_size=97, block_size=33, n_inner=50, bias=False, qkv_bias=False)
    counts = parameter_counts(cfg)
    model = GPT2(cfg)
    assert counts["total"] == model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert counts["per_block"] == sum(p.numel() for p in model.transformer.h[0].parameters())


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="gpt2-medium"):
        GPT2Config.from_preset("gpt3")


@pytest.mark.parametrize(
    "bad", [dict(n_embd=100, n_head=3), dict(n_layer=0), dict(activation="relu"), dict(attn_pdrop=1.5), dict(vocab_size=2.5)]
)
def test_invalid_configs_raise(bad):
    with pytest.raises(ConfigError):
        GPT2Config(**bad)


def test_hf_dict_round_trip_and_field_names():
    cfg = GPT2Config(n_layer=3, n_head=4, n_embd=64, vocab_size=500, block_size=77, n_inner=99, embd_pdrop=0.0,
                     tie_word_embeddings=False, layer_norm_epsilon=1e-6)
    hf = cfg.to_hf_dict()
    assert (hf["n_positions"], hf["n_embd"], hf["n_layer"], hf["n_head"], hf["n_inner"]) == (77, 64, 3, 4, 99)
    assert hf["activation_function"] == "gelu_new" and hf["tie_word_embeddings"] is False
    assert GPT2Config.from_hf_dict(json.loads(json.dumps(hf))) == cfg


def test_bias_flags_survive_config_json(tmp_path):
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10, block_size=8, bias=False, qkv_bias=False)
    cfg.to_json_file(tmp_path / "config.json")
    assert GPT2Config.from_json_file(tmp_path / "config.json") == cfg


def test_transformers_config_reads_into_ours():
    from transformers import GPT2Config as HFConfig

    hf = HFConfig(n_layer=5, n_head=8, n_embd=256, n_positions=300, vocab_size=1234, resid_pdrop=0.2)
    cfg = GPT2Config.from_hf_dict(hf.to_dict())
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size, cfg.resid_pdrop) == (5, 8, 256, 300, 1234, 0.2)
    assert cfg.activation == "gelu_tanh" and cfg.layer_norm_epsilon == 1e-5


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx"),
        ("scale_attn_weights", False, "scale_attn_weights"),
        ("add_cross_attention", True, "cross-attention"),
        ("activation_function", "swish", "activation_function"),
        ("model_type", "llama", "llama"),
    ],
)
def test_unsupported_hf_options_are_refused(key, value, message):
    hf = GPT2Config().to_hf_dict()
    hf[key] = value
    with pytest.raises(ConfigError, match=message):
        GPT2Config.from_hf_dict(hf)


def test_exact_gelu_is_kept_apart():
    assert GPT2Config.from_hf_dict({"activation_function": "gelu"}).activation == "gelu"
    assert set(PRESETS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}
