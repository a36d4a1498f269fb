"""Decoding: processors against hand-computed examples and transformers, the loop against transformers'
generate, padding, stopping, streaming, context overflow, the static (compilable) step, and errors."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import perturbed_model
from cuda_graph_stand_in import FakeCUDAGraph, use_fake_cuda_graphs
from gpt2lab import GPT2, GenerationError, GPT2Config
from gpt2lab.generate import (
    NAN_CHECK_EVERY,
    GenerationSettings,
    RowText,
    StaticDecoder,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    generate,
    generate_text,
    process_logits,
    token_bytes_fn,
)
from gpt2lab.sampling import NO_STEP
from gpt2lab.static_decoder import kept_decoders, release_decoder, static_cache_length, static_decoder

NEG = float("-inf")
SMALL = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=53, block_size=24)


@pytest.fixture(scope="module")
def small() -> GPT2:
    """A small random model with every parameter perturbed (a sharp-ish distribution, short context)."""
    return perturbed_model(GPT2Config(**SMALL), scale=0.3)


@pytest.fixture(scope="module")
def tiny(hf_tiny) -> tuple[object, GPT2]:
    hf, path = hf_tiny
    return hf, GPT2.from_pretrained(path)


def ids(B: int, T: int, seed: int = 0, vocab: int = SMALL["vocab_size"]) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def left_pad(prompts: list[torch.Tensor], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in prompts)
    idx = torch.stack([torch.cat([torch.full((T - len(p),), pad), p]) for p in prompts])
    mask = torch.stack([torch.cat([torch.zeros(T - len(p), dtype=torch.long), torch.ones(len(p), dtype=torch.long)]) for p in prompts])
    return idx, mask


# the three ways generate can decode: the ordinary cached step, the static step, and the static step compiled
PATHS = ["ordinary", "static", "compiled"]


@pytest.fixture
def quick_compile(monkeypatch):
    """torch.compile with the aot_eager backend: the same whole-graph capture (fullgraph=True), without
    building C++ kernels for every test. One test below compiles for real."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, **{**kw, "backend": "aot_eager"}))


def use_path(path: str, request) -> dict:
    """generate's keyword arguments for one of ``PATHS``."""
    if path == "compiled":
        request.getfixturevalue("quick_compile")
        return dict(compile=True)
    return dict(static_cache=path == "static")


class ToyTokenizer:
    """Each id is a few bytes; id 0 and 1 are the two halves of 'é' (one character across two tokens)."""

    eot_token = 2

    def table(self, t: int) -> bytes:
        if t == 0:
            return b"\xc3"
        if t == 1:
            return b"\xa9"
        if t == 2:
            return b"<|endoftext|>"
        return (chr(ord("a") + t % 26) * (1 + t % 3)).encode()

    def decode_single_token_bytes(self, t: int) -> bytes:
        return self.table(t)

    def decode(self, ids) -> str:
        return b"".join(self.table(t) for t in ids).decode("utf-8", errors="replace")

    def encode(self, text: str, allowed_special="none") -> list[int]:
        return [3 + (ord(c) % 40) for c in text]  # any ids will do: only the continuation is read


# -- settings --------------------------------------------------------------------------------------

BAD = [
    dict(temperature=-0.1),
    dict(temperature=float("nan")),
    dict(temperature=float("inf")),
    dict(top_k=0),
    dict(top_k=-3),
    dict(top_k=2.5),
    dict(top_p=0.0),
    dict(top_p=1.5),
    dict(top_p=-0.2),
    dict(min_p=-0.1),
    dict(min_p=1.0),
    dict(repetition_penalty=0.0),
    dict(repetition_penalty=-1.0),
    dict(repetition_penalty=float("nan")),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
@pytest.mark.parametrize("stream", [False, True])
def test_every_bad_setting_is_an_error_before_any_work(small, monkeypatch, bad, stream):
    def no_forward(*a, **k):
        raise AssertionError("the model ran before the settings were checked")

    monkeypatch.setattr(small, "forward", no_forward)
    name = next(iter(bad))
    with pytest.raises(GenerationError, match=name):
        generate(small, ids(1, 4), 5, stream=stream, **bad)
    with pytest.raises(ValueError):  # GenerationError is also a ValueError
        small.generate(ids(1, 4), 5, **bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=2.5), "max_new_tokens"),
        (dict(idx=torch.tensor([[1, 2, 99]])), r"\[0, 53\)"),
        (dict(idx=torch.zeros(1, 0, dtype=torch.long)), "at least one token"),
        (dict(idx=torch.ones(3)), "shaped"),
        (dict(attention_mask=torch.tensor([[1, 1, 0, 0]])), "left padding"),
        (dict(attention_mask=torch.tensor([[0, 0, 0, 0]])), "all padding"),
        (dict(attention_mask=torch.tensor([[1, 1]])), "shape"),
        (dict(stop="x"), "tokenizer"),
        (dict(stop=[""], tokenizer=ToyTokenizer()), "non-empty"),
        (dict(seed=1, generator=torch.Generator()), "not both"),
        (dict(seed="1"), "seed"),
        (dict(eos_token_id=53), "eos_token_id"),
    ],
)
def test_bad_inputs_are_errors_before_any_work(small, monkeypatch, kwargs, match):
    monkeypatch.setattr(small, "forward", lambda *a, **k: pytest.fail("the model ran"))
    args = dict(idx=ids(1, 4), max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(GenerationError, match=match):
        generate(small, args.pop("idx"), args.pop("max_new_tokens"), **args)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_logits_are_an_error(value):
    torch.manual_seed(0)
    m = GPT2(GPT2Config(**SMALL)).eval()
    with torch.no_grad():
        m.transformer.ln_f.weight[3] = value  # poisons every logit
    with pytest.raises(GenerationError, match="NaN or inf"):
        m.generate(ids(1, 4), 3, temperature=0.0)


def test_zero_new_tokens_returns_the_prompt(small, monkeypatch):
    monkeypatch.setattr(small, "forward", lambda *a, **k: pytest.fail("no token asked for, nothing to run"))
    x = ids(2, 5)
    assert torch.equal(generate(small, x, 0), x)


# -- processors: hand-computed examples --------------------------------------------------------------


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert torch.equal(apply_repetition_penalty(logits, seen, 2.0), torch.tensor([[1.0, -2.0, 0.5, 3.0]]))


def test_temperature_divides_the_logits():
    assert torch.equal(apply_temperature(torch.tensor([[2.0, 4.0, -1.0]]), 2.0), torch.tensor([[1.0, 2.0, -0.5]]))


def test_top_k_keeps_the_k_largest_and_their_ties():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, 0.0]])
    assert torch.equal(apply_top_k(logits, 2), torch.tensor([[NEG, 3.0, NEG, 3.0, NEG]]))
    assert torch.equal(apply_top_k(logits, 3), torch.tensor([[NEG, 3.0, 2.0, 3.0, NEG]]))
    assert torch.equal(apply_top_k(logits, 1), torch.tensor([[NEG, 3.0, NEG, 3.0, NEG]]))  # a tie for first
    assert torch.equal(apply_top_k(logits, 99), logits)


@pytest.mark.parametrize("p, kept", [(0.45, [0]), (0.75, [0, 1]), (0.85, [0, 1, 2]), (0.99, [0, 1, 2, 3]), (1.0, [0, 1, 2, 3])])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = apply_top_p(probs.log(), p)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == kept
    assert torch.equal(out[0, kept], probs.log()[0, kept])  # what stays is unchanged


@pytest.mark.parametrize("min_p, kept", [(0.0, [0, 1, 2, 3]), (0.2, [0, 1, 2]), (0.5, [0, 1]), (0.9, [0])])
def test_min_p_keeps_tokens_at_least_min_p_times_the_top_one(min_p, kept):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = apply_min_p(probs.log(), min_p)
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == kept


def test_processors_run_in_transformers_order_with_transformers_formulas():
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 200, generator=g) * 3
    history = torch.randint(0, 200, (4, 30), generator=g)
    seen = torch.zeros(4, 200, dtype=torch.bool).scatter_(1, history, True)
    for settings in [
        GenerationSettings(temperature=0.7, top_k=50, top_p=0.9, min_p=0.05, repetition_penalty=1.3),
        GenerationSettings(temperature=1.5, top_p=0.6),
        GenerationSettings(temperature=0.5, min_p=0.2, repetition_penalty=0.8),
        GenerationSettings(temperature=1.0, top_k=7),
    ]:
        hf = LogitsProcessorList()
        if settings.repetition_penalty:
            hf.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
        hf.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            hf.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p:
            hf.append(TopPLogitsWarper(settings.top_p))
        if settings.min_p:
            hf.append(MinPLogitsWarper(settings.min_p))
        assert torch.equal(process_logits(logits.clone(), settings, seen), hf(history, logits.clone())), settings


def test_greedy_applies_only_the_repetition_penalty():
    logits = torch.tensor([[2.0, 1.9, -3.0]])
    seen = torch.tensor([[True, False, False]])
    s = GenerationSettings(temperature=0.0, top_k=1, top_p=0.1, repetition_penalty=1.5)
    assert torch.equal(process_logits(logits, s, seen), torch.tensor([[2.0 / 1.5, 1.9, -3.0]]))


# -- the loop against transformers ----------------------------------------------------------------


def test_greedy_tokens_identical_to_transformers(tiny):
    hf, model = tiny
    prompt = ids(3, 10, seed=2, vocab=1000)
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(prompt, 30, temperature=0.0), ref)


def test_greedy_with_repetition_penalty_identical_to_transformers(tiny):
    hf, model = tiny
    prompt = ids(2, 8, seed=3, vocab=1000)
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=30, do_sample=False, repetition_penalty=1.3, pad_token_id=0)
    out = model.generate(prompt, 30, temperature=0.0, repetition_penalty=1.3)
    assert torch.equal(out, ref)
    assert not torch.equal(out, model.generate(prompt, 30, temperature=0.0))  # the penalty changed something


def test_sampling_with_the_same_settings_and_seed_matches_transformers_on_cpu(tiny):
    """On CPU a seeded torch.Generator and torch's global generator give the same random stream, so with
    the same processors in the same order the same seed draws the same tokens."""
    hf, model = tiny
    prompt = ids(1, 6, seed=4, vocab=1000)
    kw = dict(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.2)
    torch.manual_seed(123)
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=25, do_sample=True, pad_token_id=0, **kw)
    assert torch.equal(model.generate(prompt, 25, seed=123, **kw), ref)


def test_eos_stops_like_transformers(tiny):
    hf, model = tiny
    prompt = ids(1, 6, seed=5, vocab=1000)
    full = model.generate(prompt, 20, temperature=0.0)
    eos = int(full[0, 6 + 7])  # the 8th new token
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    out = model.generate(prompt, 20, temperature=0.0, eos_token_id=eos)
    assert torch.equal(out, ref)
    first = (full[0, 6:] == eos).nonzero()[0].item()
    assert out.shape[1] == 6 + first + 1 and out[0, -1].item() == eos


# -- sampling --------------------------------------------------------------------------------------


def test_sampling_is_reproducible_with_a_seed_and_leaves_the_global_generator_alone(small):
    x = ids(2, 4)
    state = torch.get_rng_state()
    a = small.generate(x, 15, temperature=1.0, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, small.generate(x, 15, temperature=1.0, seed=7))
    assert not torch.equal(a, small.generate(x, 15, temperature=1.0, seed=8))


def test_top_k_1_equals_greedy(small):
    x = ids(3, 5)
    assert torch.equal(small.generate(x, 12, temperature=1.3, top_k=1, seed=3), small.generate(x, 12, temperature=0.0))


def test_sampled_tokens_stay_inside_the_nucleus(small):
    x = ids(1, 5)
    logits = small(x)[0, -1]
    probs = logits.softmax(-1)
    top_p = float(probs.sort(descending=True).values[:3].sum()) - 1e-6  # the 3 likeliest tokens, whatever the random weights
    nucleus = set(torch.isfinite(apply_top_p(logits[None], top_p))[0].nonzero().flatten().tolist())
    assert nucleus == set(probs.topk(3).indices.tolist())
    drawn = {generate(small, x, 1, top_p=top_p, seed=s)[0, -1].item() for s in range(60)}
    assert drawn <= nucleus and len(drawn) > 1


def test_stream_yields_what_the_call_returns(small):
    x = ids(2, 5)
    for kw in (dict(temperature=0.0), dict(temperature=0.9, top_p=0.8, seed=11), dict(temperature=0.0, eos_token_id=5)):
        steps = list(small.generate(x, 14, stream=True, **kw))
        assert all(s.shape == (2, 1) for s in steps)
        assert torch.equal(torch.cat([x, *steps], dim=1), small.generate(x, 14, **kw))


# -- batches: left padding, independent stopping --------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_left_padded_batch_equals_one_by_one(tiny, path, request):
    _, model = tiny
    prompts = [ids(1, n, seed=n, vocab=1000)[0] for n in (3, 9, 14)]
    idx, mask = left_pad(prompts, pad=999)
    for kw in (dict(temperature=0.0), dict(temperature=0.0, repetition_penalty=1.4)):
        batch = generate(model, idx, 20, attention_mask=mask, **use_path(path, request), **kw)
        for row, p in enumerate(prompts):
            alone = generate(model, p[None], 20, **kw)
            assert torch.equal(batch[row, idx.size(1) - len(p) :], alone[0]), (row, kw)


def test_rows_stop_independently(tiny):
    _, model = tiny
    prompts = [ids(1, n, seed=10 + n, vocab=1000)[0] for n in (4, 7)]
    idx, mask = left_pad(prompts)
    free = generate(model, idx, 25, attention_mask=mask, temperature=0.0)
    T = idx.size(1)
    eos = int(free[0, T + 4])  # row 0 meets this token by its 5th new token
    assert eos not in free[1, T:].tolist(), "pick a prompt where row 1 never makes row 0's stop token"
    out = generate(model, idx, 25, attention_mask=mask, temperature=0.0, eos_token_id=eos, pad_token_id=999)
    first = free[0, T:].tolist().index(eos)
    assert torch.equal(out[0, : T + first + 1], free[0, : T + first + 1])
    assert (out[0, T + first + 1 :] == 999).all()  # row 0 stopped and is padded
    assert torch.equal(out[1], free[1])  # row 1 went on to the end


# -- stop strings and text ------------------------------------------------------------------------------


def test_row_text_joins_a_character_split_across_tokens():
    tok = ToyTokenizer()  # 3 -> "d", 0 + 1 -> "é", 4 -> "ee"
    row = RowText(tok.decode_single_token_bytes)
    pieces = []
    for t in [3, 0, 1, 4]:
        row.feed(t)
        pieces.append(row.take())
    assert pieces == ["d", "", "é", "ee"]  # the half character is held until the other half comes
    row.finish()
    assert "".join(pieces) + row.take() == tok.decode([3, 0, 1, 4])


def test_row_text_cuts_exactly_before_a_stop_string_spanning_tokens():
    tok = ToyTokenizer()  # 3 -> "d", 4 -> "ee", 5 -> "fff", 6 -> "g"
    row = RowText(tok.decode_single_token_bytes, stop=["eef"])
    shown = []
    for t in [3, 4, 5, 6]:
        done = row.feed(t)
        shown.append(row.take())
        if done:
            break
    assert shown == ["d", "", ""] and row.stop_reason == "stop"  # "ee" is held back while "eef" may follow
    assert "".join(shown) == tok.decode([3, 4, 5]).split("eef")[0] == "d"


def test_row_text_releases_a_held_back_prefix_that_never_completed():
    tok = ToyTokenizer()
    row = RowText(tok.decode_single_token_bytes, stop=["dx"])
    assert row.feed(3) is False and row.take() == ""  # "d" could start "dx"
    row.finish()
    assert row.take() == "d" and row.stop_reason is None


def test_row_text_takes_the_earliest_of_several_stop_strings_and_eos():
    tok = ToyTokenizer()
    row = RowText(tok.decode_single_token_bytes, stop=["ff", "eef"])  # "d" "ee" "fff": "eef" comes first
    row.feed(3)
    row.feed(4)
    assert row.feed(5) is True and row.text == b"d"
    row = RowText(tok.decode_single_token_bytes, eos_token_id=2)
    assert row.feed(3) is False and row.feed(2) is True and row.stop_reason == "eos" and row.text == b"d"


def test_stop_strings_cut_the_text_exactly(small):
    tok = ToyTokenizer()
    x = ids(1, 5)
    full_ids = generate(small, x, 30, temperature=0.0)[0, 5:].tolist()
    full = tok.decode(full_ids)
    # a stop string that starts inside one token and ends inside another
    start = len(tok.decode(full_ids[:6])) - 1
    stop = full[start : start + 3]
    expected = full[: full.find(stop)]
    got = generate_text_from_ids(small, tok, x, 30, stop)
    assert got == expected
    # the ids keep the token that completed the stop string, and nothing after it
    out = generate(small, x, 30, temperature=0.0, stop=stop, tokenizer=tok)[0, 5:].tolist()
    assert stop in tok.decode(out) and stop not in tok.decode(out[:-1])


def generate_text_from_ids(model, tok, x, n, stop) -> str:
    """generate_text with a prompt whose ids are exactly ``x`` (the toy tokenizer's encode is arbitrary)."""
    class Fixed(ToyTokenizer):
        def encode(self, text, allowed_special="none"):
            return x[0].tolist()

    return generate_text(model, Fixed(), "prompt", n, temperature=0.0, stop=stop, stop_at_eot=False)


def test_text_streaming_equals_the_whole_text(small):
    tok = ToyTokenizer()
    for kw in (dict(temperature=0.0), dict(temperature=1.0, seed=5), dict(temperature=1.0, seed=9, stop=["lj", "xx"])):
        whole = generate_text(small, tok, "some prompt", 40, stop_at_eot=False, **kw)
        stream = generate_text(small, tok, "some prompt", 40, stop_at_eot=False, stream=True, **kw)
        pieces = list(stream)
        assert "".join(pieces) == whole and len(pieces) > 1
        assert stream.tokens > 0
        if "stop" in kw:  # the stop string was met part-way; the text ends just before it
            assert stream.tokens < 40 and not any(s in whole for s in kw["stop"])


def test_text_batch_equals_one_by_one_and_empty_prompt_starts_from_eot(small):
    tok = ToyTokenizer()
    prompts = ["ab", "a longer prompt", ""]
    batch = generate_text(small, tok, prompts, 12, temperature=0.0, stop_at_eot=False)
    assert batch == [generate_text(small, tok, p, 12, temperature=0.0, stop_at_eot=False) for p in prompts]
    eot_start = generate(small, torch.tensor([[tok.eot_token]]), 12, temperature=0.0)[0, 1:].tolist()
    assert batch[2] == tok.decode(eot_start)


def test_text_with_the_real_gpt2_tokenizer(hf_wide, gpt2_vocab_path):
    from gpt2lab.tokenizer import Tokenizer

    tok = Tokenizer.from_file(gpt2_vocab_path)
    model = GPT2.from_pretrained(hf_wide[1])
    prompt = "The capital of France is"
    x = torch.tensor([tok.encode(prompt)])
    full_ids = generate(model, x, 16, temperature=0.0)[0, x.size(1) :].tolist()
    full = tok.decode(full_ids)
    assert generate_text(model, tok, prompt, 16, temperature=0.0, stop_at_eot=False) == full
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert generate_text(model, tok, prompt, 16, temperature=0.0, stop=stop, stop_at_eot=False) == full[: full.find(stop)]


def test_token_bytes_fn_reads_every_kind_of_tokenizer(tokenizer):
    """gpt2lab's and tiktoken's single-token bytes, a decode_bytes-only tokenizer, and a decode-only one
    all give the same bytes for a token (the decode-only one as far as text can carry them)."""

    class BytesOnly:
        def decode_bytes(self, ids):
            return tokenizer.decode_bytes(ids)

    class TextOnly:
        def decode(self, ids):
            return tokenizer.decode(ids)

    whole = tokenizer.encode(" world")[0]
    half_an_emoji = tokenizer.encode("\U0001f917")[0]  # the emoji is three tokens; this one holds its first two bytes
    assert token_bytes_fn(tokenizer)(half_an_emoji) == b"\xf0\x9f"
    assert token_bytes_fn(BytesOnly())(half_an_emoji) == b"\xf0\x9f"
    assert token_bytes_fn(TextOnly())(half_an_emoji) == "\ufffd".encode()  # text cannot carry half a character
    for make in (lambda: tokenizer, BytesOnly, TextOnly):
        assert token_bytes_fn(make())(whole) == b" world"


# -- long inputs -----------------------------------------------------------------------------------------


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens_with_a_warning(small):
    x = ids(2, 40)
    with pytest.warns(UserWarning, match="last 24 tokens") as record:
        out = small.generate(x, 6, temperature=0.0)
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert torch.equal(out[:, :40], x)
    assert torch.equal(out[:, 40:], small.generate(x[:, -24:], 6, temperature=0.0)[:, 24:])


def reference_sliding(model: GPT2, x: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy without a cache: each token from the whole current window, recomputed, with the same rule
    (crop to block_size; when the window is full, restart it from the newest block_size // 2 tokens)."""
    bs = model.config.block_size
    out, start = x, max(0, x.size(1) - bs)
    for _ in range(n):
        window = out[:, start:]
        logits = model(window)[:, -1]
        out = torch.cat([out, logits.argmax(-1, keepdim=True)], 1)
        if out.size(1) - start > bs:  # the next token would not fit: slide
            start = out.size(1) - bs // 2
    return out


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("T", [5, 30])
def test_generation_past_the_context_slides_the_window(small, static, T):
    x = ids(2, T, seed=T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = generate(small, x, 50, temperature=0.0, static_cache=static)  # 5 + 50 and 30 + 50 > 24
    assert out.shape == (2, T + 50)
    assert torch.equal(out, reference_sliding(small, x, 50))


def test_padded_batch_past_the_context(small):
    prompts = [ids(1, n, seed=n)[0] for n in (3, 10)]
    idx, mask = left_pad(prompts)
    out = generate(small, idx, 40, attention_mask=mask, temperature=0.0)
    assert out.shape == (2, 50)
    # before the first slide (the cache fills at 24 columns) every row is its own prompt's greedy continuation
    for row, p in enumerate(prompts):
        alone = generate(small, p[None], 24 - idx.size(1), temperature=0.0)
        assert torch.equal(out[row, idx.size(1) - len(p) : 24], alone[0])


# -- the fixed-shape decode step (for torch.compile / CUDA graphs) ----------------------------------------


def test_static_decode_step_equals_the_cached_step(tiny):
    _, model = tiny
    x = ids(2, 7, seed=1, vocab=1000)
    cache = model.new_kv_cache(2, 32)
    model(x, kv_cache=cache)
    ref_cache = model.new_kv_cache(2, 32)
    model(x, kv_cache=ref_cache)
    decoder = StaticDecoder(model, cache)
    decoder.prefilled(7, None, step=1)
    token = ids(2, 1, seed=9, vocab=1000)
    decoder.token.copy_(token)
    for step in range(5):
        ref = model(token, kv_cache=ref_cache)[:, -1]
        got, greedy = decoder()
        cache.advance(1)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        assert torch.equal(greedy, ref.argmax(-1))
        token = greedy[:, None]
        # the step moved its own state on: the next column, position and step, its argmax to feed next
        assert decoder.write_pos.item() == 8 + step and torch.equal(decoder.position, torch.full((2, 1), 8 + step))
        assert decoder.step.item() == 2 + step and torch.equal(decoder.token, token)
    assert decoder.first_nonfinite.item() == NO_STEP


def test_static_decode_step_is_captured_whole_by_torch_compile(small):
    """fullgraph=True fails on any graph break: the step is one graph, as CUDA graphs need."""
    x = ids(1, 5)
    cache = small.new_kv_cache(1, 16)
    logits = small(x, kv_cache=cache)[:, -1]
    decoder = StaticDecoder(small, cache)
    decoder.prefilled(5, None, step=1)
    compiled = torch.compile(decoder, backend="aot_eager", fullgraph=True)
    ref_cache = small.new_kv_cache(1, 16)
    small(x, kv_cache=ref_cache)
    with torch.no_grad():  # as in generate
        token = logits.argmax(-1, keepdim=True)
        decoder.token.copy_(token)
        for _ in range(3):
            logits, greedy = compiled()
            cache.advance(1)
            torch.testing.assert_close(logits, small(token, kv_cache=ref_cache)[:, -1], atol=1e-5, rtol=0)
            token = greedy[:, None]


def test_static_cache_generation_equals_the_default_path(small):
    x = ids(3, 6)
    for kw in (dict(temperature=0.0), dict(temperature=0.8, top_k=10, seed=2), dict(temperature=0.0, eos_token_id=4)):
        assert torch.equal(generate(small, x, 20, static_cache=True, **kw), generate(small, x, 20, **kw))


WIDE = dict(SMALL, block_size=256)  # room for several static cache lengths


@pytest.fixture(scope="module")
def wide() -> GPT2:
    return perturbed_model(GPT2Config(**WIDE), scale=0.3)


def test_static_cache_lengths_are_a_few_powers_of_two_within_the_context():
    assert [static_cache_length(n, 1024) for n in (1, 33, 64, 65, 160, 257, 1000, 1024, 5000)] == [64, 64, 64, 128, 256, 512, 1024, 1024, 1024]
    assert static_cache_length(30, 24) == 24 and static_cache_length(10, 24) == 24  # never past the context


@pytest.mark.parametrize("path", ["static", "compiled"])
def test_static_paths_equal_the_ordinary_path_at_every_cache_length(wide, path, request):
    """Calls that fit 64 and 128 columns (most of them masked: not yet filled), and one past the
    context (256) that refills the window: the tokens are the ordinary path's."""
    settings = (dict(temperature=0.0), dict(temperature=0.8, top_k=10, seed=2), dict(temperature=0.0, repetition_penalty=1.3))
    for T, n in ((5, 20), (5, 100), (30, 300)):
        x = ids(2, T, seed=T)
        for kw in settings:
            assert torch.equal(generate(wide, x, n, **use_path(path, request), **kw), generate(wide, x, n, **kw)), (T, n, kw)
    if path == "compiled":  # one compiled step per (batch, length); a shorter call reuses its length's graph
        assert sorted(key[:2] for key in kept_decoders(wide)) == [(2, 64), (2, 128), (2, 256)]
        generate(wide, ids(2, 3), 40, temperature=0.0, compile=True)
        assert len(kept_decoders(wide)) == 3


def test_kept_decoders_go_with_their_model_and_are_never_copied():
    """A decoder holds its model: kept in a table outside the model, every model that ever decoded
    would stay in memory (GPU memory too). Kept on the model, they are freed with it."""
    import copy
    import gc
    import pickle
    import weakref

    model = perturbed_model(GPT2Config(**SMALL))
    static_decoder(model, 2, 64, compile=True)  # torch.compile wraps lazily: nothing is compiled here
    assert len(kept_decoders(model)) == 1
    assert len(kept_decoders(copy.deepcopy(model))) == 0
    assert len(kept_decoders(pickle.loads(pickle.dumps(model)))) == 0
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None


def test_two_streams_at_once_each_get_their_own_compiled_decoder(wide, request):
    """A kept decoder holds one generation's cache and positions: a second generation of the same
    shapes that starts before the first has finished gets a decoder of its own, and both streams
    give the tokens they give alone."""
    kw = dict(temperature=0.0, **use_path("compiled", request))
    a, b = ids(2, 6, seed=1), ids(2, 6, seed=2)
    alone_a, alone_b = generate(wide, a, 12, **kw), generate(wide, b, 12, **kw)
    stream_a, stream_b = generate(wide, a, 12, stream=True, **kw), generate(wide, b, 12, stream=True, **kw)
    steps_a, steps_b = [], []
    for step_a, step_b in zip(stream_a, stream_b, strict=True):  # interleaved, one step each
        steps_a.append(step_a)
        steps_b.append(step_b)
    assert torch.equal(torch.cat([a, *steps_a], 1), alone_a) and torch.equal(torch.cat([b, *steps_b], 1), alone_b)
    assert not kept_decoders(wide).in_use  # both finished: the kept one is free again
    assert torch.is_grad_enabled()  # and autograd is as the caller had it


def test_a_stream_leaves_the_callers_grad_mode_alone(small):
    """Between the steps of a stream the caller's code runs with its own grad mode (generate's own
    work runs without autograd), and nothing is left switched off, however the streams end."""
    x = ids(1, 4)
    stream = generate(small, x, 3, stream=True, temperature=0.0)
    next(stream)
    assert torch.is_grad_enabled()
    with torch.no_grad():
        next(stream)
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    stream.close()  # abandoned half way
    assert torch.is_grad_enabled()
    with torch.no_grad():
        assert len(list(generate(small, x, 3, stream=True, temperature=0.0))) == 3
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()


def test_kept_decoders_of_a_dtype_the_model_left_are_dropped():
    model = perturbed_model(GPT2Config(**SMALL))
    _, decoder, _ = static_decoder(model, 2, 64, compile=True)
    release_decoder(model, decoder)  # what generate does when its call ends
    model.to(torch.float64)
    static_decoder(model, 2, 64, compile=True)
    assert [key[2] for key in kept_decoders(model)] == [torch.float64]  # the float32 cache went with its dtype


def test_compiled_generation_with_inductor_equals_the_ordinary_path(wide):
    """The real compiler (C++ kernels on a CPU; on a GPU the same graph also becomes a CUDA graph),
    on a padded batch: the cache writes, the mask and the greedy token inside the compiled step."""
    prompts = [ids(1, n, seed=n)[0] for n in (3, 11)]
    idx, mask = left_pad(prompts, pad=7)
    compiled = generate(wide, idx, 30, attention_mask=mask, temperature=0.0, compile=True)
    assert torch.equal(compiled, generate(wide, idx, 30, attention_mask=mask, temperature=0.0))


@pytest.mark.parametrize("path", ["static", "compiled"])
def test_static_paths_stop_on_eos_and_stop_strings_like_the_ordinary_path(small, wide, path, request):
    x = ids(3, 6)
    free = generate(wide, x, 40, temperature=0.0)
    eos = int(free[0, 6 + 4])  # row 0 makes it by its 5th new token
    for kw in (dict(temperature=0.0, eos_token_id=eos), dict(temperature=0.9, seed=4, eos_token_id=eos, pad_token_id=1)):
        assert torch.equal(generate(wide, x, 40, **use_path(path, request), **kw), generate(wide, x, 40, **kw)), kw
    tok = ToyTokenizer()
    for kw in (dict(temperature=0.0, stop=["lj", "xx"]), dict(temperature=1.0, seed=9, stop=["lj", "xx"])):
        text = generate_text(wide, tok, ["some prompt", "x"], 40, stop_at_eot=False, **use_path(path, request), **kw)
        assert text == generate_text(wide, tok, ["some prompt", "x"], 40, stop_at_eot=False, **kw), kw


def poisoned(model: GPT2, position: int) -> GPT2:
    """A copy of ``model`` whose position ``position`` embeds to NaN: every logit from there on is NaN."""
    m = GPT2(model.config).eval()
    m.load_state_dict(model.state_dict())
    with torch.no_grad():
        m.transformer.wpe.weight[position] = float("nan")
    return m


@pytest.mark.parametrize("path", PATHS)
def test_nan_logits_part_way_raise_with_the_step_they_appeared_at(wide, path, request):
    m = poisoned(wide, 4 + 5)  # a 5-token prompt: step 0's logits come from position 4, step 5's from position 9
    x = ids(2, 5)
    with pytest.raises(GenerationError, match="NaN or inf logits at step 5"):
        generate(m, x, 20, temperature=0.0, **use_path(path, request))
    # with eos the ids come to the host every step anyway: the check rides along, before step 5 is yielded
    stream = generate(m, x, 20, temperature=0.0, eos_token_id=0, stream=True, **use_path(path, request))
    yielded = []
    with pytest.raises(GenerationError, match="at step 5"):
        for new in stream:
            yielded.append(new)
    assert len(yielded) == 5
    # without: read every few steps and at the end, so a stream may see a few of the NaN steps' tokens first
    yielded = []
    with pytest.raises(GenerationError, match="at step 5"):
        for new in generate(m, x, 20, temperature=0.0, stream=True, **use_path(path, request)):
            yielded.append(new)
    assert 5 <= len(yielded) < 20


@pytest.mark.parametrize("path", PATHS)
def test_decoding_does_not_wait_for_the_device_every_step(wide, path, request, monkeypatch):
    """Without eos or stop strings nothing needs a token on the host: the loop reads the device
    (the NaN check) every few steps, not every step. Counted by patching every way a tensor's value
    reaches Python."""
    kw = use_path(path, request)
    x = ids(2, 5)
    generate(wide, x, 100, temperature=0.0, **kw)  # compile first: compiling reads values of its own
    reads = {"n": 0}
    for name in ("__bool__", "__int__", "__float__", "__index__", "item", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            reads["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for n in (20, 100):
        reads["n"] = 0
        generate(wide, x, n, temperature=0.0, **kw)
        counts.append(reads["n"])
    assert counts[1] - counts[0] <= 80 // NAN_CHECK_EVERY + 1 <= 80 // 8, counts  # 80 more steps, a few more reads


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_generation_runs_and_paths_agree(small, dtype):
    m = GPT2(small.config).eval()
    m.load_state_dict(small.state_dict())
    m = m.to(dtype)
    x = ids(2, 5)
    out = generate(m, x, 10, temperature=0.0)
    assert out.shape == (2, 15) and out.dtype == torch.long
    assert torch.equal(out, generate(m, x, 10, temperature=0.0, static_cache=True))


def test_generate_restores_training_mode(small):
    small.train()
    try:
        small.generate(ids(1, 3), 4, temperature=0.0)
        assert small.training
        stream = small.generate(ids(1, 3), 4, temperature=0.0, stream=True)
        next(stream)
        stream.close()
        assert small.training
    finally:
        small.eval()


def test_model_generate_delegates_to_generate(small):
    x = ids(2, 4)
    assert torch.equal(small.generate(x, 9, temperature=0.7, top_p=0.9, min_p=0.1, seed=1),
                       generate(small, x, 9, temperature=0.7, top_p=0.9, min_p=0.1, seed=1))


def test_settings_are_a_validated_value():
    s = GenerationSettings(temperature=0.0)
    assert s.greedy and not s.penalises_repeats
    assert GenerationSettings(repetition_penalty=1.2).penalises_repeats
    with pytest.raises(AttributeError):  # frozen: checked once, cannot be changed into a bad value
        s.temperature = -1.0  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# The CUDA-graph step (generate's default on a GPU), on a CPU: a stand-in for torch.cuda's graph
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_cuda_graphs(monkeypatch):
    """generate's CUDA-graph path on a CPU: graph capture through the stand-in (tests/cuda_graph_stand_in.py)."""
    import gpt2lab.generate as generate_module
    from gpt2lab import static_decoder as static_module

    use_fake_cuda_graphs(monkeypatch)
    real = static_module.static_decoder
    monkeypatch.setattr(generate_module, "static_decoder", lambda model, B, L, compile, graph=False: real(model, B, L, compile, graph=True))


def test_the_recorded_step_gives_the_ordinary_steps_tokens(fake_cuda_graphs):
    """What gpu_check.py checks on a GPU, here through a replayed recording: greedy, padded, sampled and
    penalised calls; again with the recording reused; after an in-place weight edit (the recording
    reads the weights where they are); after a parameter is replaced (recorded again)."""
    model = perturbed_model(GPT2Config(**WIDE), scale=0.3)
    prompts = [ids(1, n, seed=n)[0] for n in (3, 9)]
    padded, mask = left_pad(prompts, pad=7)
    calls = [(ids(2, 6), dict(temperature=0.0)), (padded, dict(temperature=0.0, attention_mask=mask)),
             (ids(2, 6), dict(temperature=0.8, top_k=10, seed=3)), (ids(2, 6), dict(temperature=0.0, repetition_penalty=1.3))]

    def check() -> None:
        for x, kw in calls:
            assert torch.equal(generate(model, x, 30, static_cache=True, **kw), generate(model, x, 30, static_cache=False, **kw)), kw

    check()
    recorded = dict(kept_decoders(model))
    assert recorded and all(type(step).__name__ == "GraphedStep" for _, _, step, _ in recorded.values())
    check()
    assert all(kept_decoders(model)[key][2] is step for key, (_, _, step, _) in recorded.items())  # reused, not recorded again
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.mul_(1.5)
    check()
    model.transformer.h[1].mlp.c_fc.weight = torch.nn.Parameter(model.transformer.h[1].mlp.c_fc.weight.detach() * 1.5)
    check()
    assert all(kept_decoders(model)[key][2] is not step for key, (_, _, step, _) in recorded.items())  # the weights moved


def test_a_step_that_cannot_be_recorded_decodes_plainly_with_a_warning(fake_cuda_graphs, small):
    FakeCUDAGraph.fail = True
    x = ids(2, 5)
    with pytest.warns(RuntimeWarning, match="decoding without a CUDA graph"):
        out = generate(small, x, 10, static_cache=True, temperature=0.0)
    assert torch.equal(out, generate(small, x, 10, static_cache=False, temperature=0.0))
