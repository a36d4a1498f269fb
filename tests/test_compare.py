"""gpt2lab.compare: the side-by-side with transformers, and its account of pipeline("text-generation")."""

from __future__ import annotations

import pytest

from gpt2lab.compare import compare
from gpt2lab.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def comparison(hf_wide, gpt2_vocab_path):
    return compare(hf_wide[1], "The capital of France is", tokenizer=Tokenizer.from_file(gpt2_vocab_path), max_new_tokens=10, seed=1)


def test_numbers_agree_layer_by_layer(comparison, hf_wide):
    n_layer = hf_wide[0].config.n_layer
    assert [n for n, _ in comparison.hidden_deltas] == ["embeddings", "block 0", f"block {n_layer - 1} + ln_f"]
    assert all(d <= 1e-4 for _, d in comparison.hidden_deltas)
    assert 0 < comparison.logits_delta <= 1e-4 or comparison.logits_delta == 0


def test_top5_and_greedy_agree(comparison):
    assert len(comparison.top5) == 5
    for (a, pa), (b, pb) in comparison.top5:
        assert a == b and abs(pa - pb) < 1e-5
    probs = [p for (_, p), _ in comparison.top5]
    assert probs == sorted(probs, reverse=True)
    assert comparison.greedy_same and comparison.greedy_ours


def test_pipeline_defaults_are_read_from_the_installed_transformers(comparison):
    from transformers.pipelines.text_generation import TextGenerationPipeline

    defaults = {name: value for name, value, _ in comparison.pipeline_defaults}
    installed = TextGenerationPipeline._default_generation_config
    assert defaults["do_sample"] == str(installed.do_sample) == "True"
    assert defaults["temperature"] == str(installed.temperature) == "0.7"
    assert defaults["max_new_tokens"] == str(installed.max_new_tokens) == "256"
    assert defaults["top_k"] == "50"
    assert defaults["pad_token_id"] == "None -> 50256"


def test_pipeline_agrees_with_matched_settings_and_greedy_but_not_with_a_plain_loop(comparison):
    assert comparison.pipeline_greedy == comparison.greedy_ours
    assert comparison.pipeline_sampled == comparison.matched_sampled  # same settings, same seed, same stream on CPU
    assert comparison.plain_sampled != comparison.pipeline_sampled  # temperature 1, no top-k: other text
    report = comparison.report()
    assert "(same as the pipeline)" in report and "(differs from the pipeline)" in report


def test_empty_prompt_starts_from_endoftext(hf_wide, gpt2_vocab_path):
    c = compare(hf_wide[1], "", tokenizer=str(gpt2_vocab_path), max_new_tokens=5, run_pipeline=False)
    assert c.prompt_ids == [50256] and c.greedy_same and c.pipeline_sampled is None


def test_an_adapter_is_compared_merged_on_both_sides(comparison, hf_wide, gpt2_vocab_path, tmp_path):
    """A LoRA adapter: gpt2lab merges it into the base, PEFT into transformers' model; the two agree."""
    import copy
    import json

    import torch
    from peft import LoraConfig, get_peft_model

    hf, base_dir = hf_wide
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, task_type="CAUSAL_LM")
    peft = get_peft_model(copy.deepcopy(hf), lora)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    peft.save_pretrained(tmp_path / "adapter")
    config = tmp_path / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(base_dir)}))
    c = compare(tmp_path / "adapter", "The capital of France is", tokenizer=Tokenizer.from_file(gpt2_vocab_path), max_new_tokens=10,
                run_pipeline=False)
    assert all(d <= 1e-4 for _, d in c.hidden_deltas) and c.logits_delta <= 1e-4 and c.greedy_same
    assert [p for (_, p), _ in c.top5] != [p for (_, p), _ in comparison.top5]  # the adapter changed the model
