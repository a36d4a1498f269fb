"""Hook points and interp against TransformerLens (v4's TransformerBridge over the same transformers
model, raw numerics: no LayerNorm folding), on perturbed random weights in fp32, to 1e-4."""

import pytest
import torch

from conftest import perturbed_hf_model
from gpt2lab import GPT2, interp
from gpt2lab.errors import InputError

TOL = 1e-4
# GPT-2's real vocabulary (so the IOI prompt is real tokens), on a small network
SHAPE = dict(n_layer=3, n_head=4, n_embd=64, vocab_size=50257, n_positions=128)
L, H, D = SHAPE["n_layer"], SHAPE["n_head"], SHAPE["n_embd"] // SHAPE["n_head"]
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    """(ours, bridge, tokenizer, checkpoint dir): both read the same saved checkpoint."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    path = tmp_path_factory.mktemp("hf_interp")
    perturbed_hf_model(seed=5, bos_token_id=50256, eos_token_id=50256, **SHAPE).save_pretrained(path)
    tokenizer.save(path)  # vocab.json + merges.txt
    hf = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager").eval()
    bridge = TransformerBridge.boot_transformers(str(path), hf_model=hf, tokenizer=GPT2TokenizerFast.from_pretrained(path), device="cpu")
    return GPT2.from_pretrained(path), bridge, tokenizer, path


def ids_of(tokenizer, text):
    return torch.tensor([tokenizer.encode(text)])


@pytest.fixture(scope="module")
def tok_ids(setup):
    """The IOI prompts' ids (1, 14) each."""
    tok = setup[2]
    return ids_of(tok, CLEAN), ids_of(tok, CORRUPT)


# our name -> (TransformerLens name, TL tensor -> our layout)
def _heads_first(t):
    return t.permute(0, 2, 1, 3)  # TL keeps (B, T, H, D); ours (B, H, T, D)


def _same(t):
    return t


TL_NAMES = {
    "resid_pre": ("hook_resid_pre", _same), "ln_1.scale": ("ln1.hook_scale", _same),
    "attn.q": ("attn.hook_q", _heads_first), "attn.k": ("attn.hook_k", _heads_first), "attn.v": ("attn.hook_v", _heads_first),
    "attn.scores": ("attn.hook_attn_scores", _same), "attn.probs": ("attn.hook_pattern", _same),
    "attn.z": ("attn.hook_z", _heads_first), "attn.out": ("hook_attn_out", _same), "resid_mid": ("hook_resid_mid", _same),
    "ln_2.scale": ("ln2.hook_scale", _same), "mlp.pre": ("mlp.hook_pre", _same), "mlp.post": ("mlp.hook_post", _same),
    "mlp.out": ("hook_mlp_out", _same), "resid_post": ("hook_resid_post", _same),
}


def tl_name(ours: str) -> str:
    if ours == "ln_f.scale":
        return "ln_final.hook_scale"
    if ours == "ln_f.out":
        return "ln_final.hook_out"
    _, i, kind = ours.split(".", 2)
    return f"blocks.{i}.{TL_NAMES[kind][0]}"


def to_ours(ours: str, t: torch.Tensor) -> torch.Tensor:
    return t if ours.startswith("ln_f") else TL_NAMES[ours.split(".", 2)[2]][1](t)


def test_every_cached_point_equals_transformer_lens(setup):
    model, bridge, tok, _ = setup
    idx = torch.cat([ids_of(tok, CLEAN), ids_of(tok, CORRUPT)])  # (2, 14)
    with torch.no_grad():
        logits, cache = model.run_with_cache(idx)
        tl_logits, tl_cache = bridge.run_with_cache(idx)
    assert (logits - tl_logits).abs().max() <= TOL
    assert len(cache) == 15 * L + 2
    for name, ours in cache.items():
        theirs = to_ours(name, tl_cache[tl_name(name)])
        assert ours.shape == theirs.shape, name
        assert (ours - theirs).abs().max() <= TOL, name  # masked scores: finfo.min on both sides


def test_interventions_equal_transformer_lens(setup):
    model, bridge, tok, _ = setup
    idx = ids_of(tok, CLEAN)

    def zero_head_ours(z, name):
        z = z.clone()
        z[:, 1] = 0
        return z

    def zero_head_tl(z, hook):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    def scale_stream(x, *_, **__):
        return x * 1.5

    with torch.no_grad():
        with model.hooks({"h.1.attn.z": zero_head_ours, "h.2.resid_pre": scale_stream}):
            ours = model(idx)
        theirs = bridge.run_with_hooks(idx, fwd_hooks=[("blocks.1.attn.hook_z", zero_head_tl), ("blocks.2.hook_resid_pre", scale_stream)])
        clean = model(idx)
    assert (ours - theirs).abs().max() <= TOL
    assert (ours - clean).abs().max() > 1e-2  # the intervention did something
    with torch.no_grad():  # ablate() is the same intervention, named
        zeroed = bridge.run_with_hooks(idx, fwd_hooks=[("blocks.1.attn.hook_z", zero_head_tl)])
        torch.testing.assert_close(interp.ablate(model, idx, [(1, 1)]), zeroed, atol=TOL, rtol=0)


def test_logit_lens_equals_transformer_lens(setup):
    model, bridge, tok, _ = setup
    idx = torch.cat([ids_of(tok, CLEAN), ids_of(tok, CORRUPT)])
    lens = interp.logit_lens(model, idx)  # (L + 1, B, T, V)
    with torch.no_grad():
        _, tl_cache = bridge.run_with_cache(idx)
        # TL's accumulated_resid(apply_ln=True) applies ln_final with each stream's own statistics
        tl_lens = bridge.unembed(tl_cache.accumulated_resid(apply_ln=True))
        assert lens.shape == (L + 1, 2, idx.size(1), SHAPE["vocab_size"])
        assert (lens - tl_lens).abs().max() <= TOL
        assert (lens[-1] - model(idx)).abs().max() <= TOL  # the last entry is the output
        # not the final stream's scale: entry 0 is ln_f recomputed on the embeddings
        stream = tl_cache["blocks.0.hook_resid_pre"]
        ln_f = model.transformer.ln_f
        torch.testing.assert_close(lens[0], model.lm_head(torch.nn.functional.layer_norm(stream, (SHAPE["n_embd"],), ln_f.weight, ln_f.bias)),
                                   atol=TOL, rtol=0)


@pytest.mark.parametrize(("point", "by", "tl_fn"), [
    ("resid_pre", "position", "get_act_patch_resid_pre"),
    ("resid_mid", "position", "get_act_patch_resid_mid"),
    ("attn.out", "position", "get_act_patch_attn_out"),
    ("mlp.out", "position", "get_act_patch_mlp_out"),
    ("attn.z", "head", "get_act_patch_attn_head_out_all_pos"),
    ("attn.probs", "head", "get_act_patch_attn_head_pattern_all_pos"),
])
def test_patching_equals_transformer_lens(setup, point, by, tl_fn):
    from transformer_lens import patching

    model, bridge, tok, _ = setup
    clean, corrupt = ids_of(tok, CLEAN), ids_of(tok, CORRUPT)
    mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]
    metric = interp.logit_diff(mary, john)
    ours = interp.patch(model, clean, corrupt, metric, point=point, by=by, progress=False)
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
        theirs = getattr(patching, tl_fn)(bridge, corrupt, clean_cache, metric)
    assert ours.shape == theirs.shape == ((L, clean.size(1)) if by == "position" else (L, H))
    assert (ours - theirs).abs().max() <= TOL
    if point == "resid_pre":  # layer 0 at the one differing position restores the clean run, the others do nothing
        with torch.no_grad():
            clean_value, corrupt_value = float(metric(model(clean))), float(metric(model(corrupt)))
        differ = int((clean != corrupt).nonzero()[0, 1])
        assert ours[0, differ] == pytest.approx(clean_value, abs=TOL)
        assert ours[0, 0] == pytest.approx(corrupt_value, abs=TOL)


def test_patching_batches_several_runs_per_forward(setup, monkeypatch):
    model, _, tok, _ = setup
    clean, corrupt = ids_of(tok, CLEAN), ids_of(tok, CORRUPT)
    metric = interp.logit_diff(tok.encode(" Mary")[0], tok.encode(" John")[0])
    full = interp.patch(model, clean, corrupt, metric, progress=False)
    monkeypatch.setattr(interp.intervene, "TOKENS_PER_BATCH", 3 * clean.size(1))  # three runs per forward, the last chunk shorter
    calls = []
    monkeypatch.setattr(model, "forward", lambda idx, *a, _f=model.forward, **k: calls.append(idx.size(0)) or _f(idx, *a, **k))
    chunked = interp.patch(model, clean, corrupt, metric, progress=False)
    torch.testing.assert_close(chunked, full, atol=TOL, rtol=0)
    T = clean.size(1)
    assert calls[1:] == [3, 3, 3, 3, T - 12] * L  # after the clean run: ceil(T / 3) forwards a layer


def test_attribution_adds_up_and_equals_transformer_lens(setup):
    model, bridge, tok, _ = setup
    idx = ids_of(tok, CLEAN)
    mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]
    attr = interp.logit_attribution(model, idx, mary, john)
    with torch.no_grad():
        logits = model(idx)
    real = float(logits[0, -1, mary] - logits[0, -1, john])
    assert attr.total == pytest.approx(real, abs=TOL)
    assert sum(attr.values()) == pytest.approx(real, abs=TOL)  # the components add up to the logit difference
    assert set(attr) == {"embed", "ln_f.bias"} | {f"h.{i}.attn.h{j}" for i in range(L) for j in range(H)} | {
        f"h.{i}.{k}" for i in range(L) for k in ("attn.bias", "mlp")}
    # TransformerLens: per-head results and the residual decomposition, centred and divided by the cached
    # ln_final scale, then dotted with the unembedding direction with ln_final's weight folded in by hand
    with torch.no_grad():
        _, cache = bridge.run_with_cache(idx)
        heads = cache.stack_head_results(layer=-1, pos_slice=-1)  # (L H, 1, C)
        direction = (bridge.W_U[:, mary] - bridge.W_U[:, john]) * bridge.ln_final.w  # (C,)
        head_values = (cache.apply_ln_to_stack(heads, layer=-1, pos_slice=-1) @ direction)[:, 0]  # (L H,)
        mlp = torch.stack([cache[f"blocks.{i}.hook_mlp_out"][:, -1] for i in range(L)])  # (L, 1, C)
        mlp_values = (cache.apply_ln_to_stack(mlp, layer=-1, pos_slice=-1) @ direction)[:, 0]
    torch.testing.assert_close(attr.heads().flatten(), head_values, atol=TOL, rtol=0)
    torch.testing.assert_close(torch.tensor([attr[f"h.{i}.mlp"] for i in range(L)]), mlp_values, atol=TOL, rtol=0)
    top_name, top_value = attr.top(1)[0]
    assert abs(top_value) == max(abs(v) for v in attr.values()) and top_name in attr


def test_result_objects_from_text(setup):
    model, _, tok, _ = setup
    lens = interp.lens(model, tok, CLEAN, top_k=3)
    n = len(tok.encode(CLEAN))
    assert lens.top_ids.shape == lens.top_probs.shape == (L + 1, n, 3)
    assert lens.tokens[1] == " Mary" and len(lens.top_tokens[L][n - 1]) == 3
    with torch.no_grad():
        out = model(ids_of(tok, CLEAN))[0, -1].softmax(-1)
    assert lens.top_ids[L, -1, 0] == out.argmax() and float(lens.top_probs[L, -1, 0]) == pytest.approx(float(out.max()), abs=1e-5)
    p = interp.patching(model, tok, CLEAN, CORRUPT, " Mary", " John", progress=False)
    assert p.by == "position" and p.scores.shape == (L, n)
    assert float(p.normalised[0, 9]) == pytest.approx(1.0, abs=1e-4)  # restoring " John" at position 9 restores the run
    assert interp.patching(model, tok, CLEAN, CORRUPT, " Mary", " John", point="attn.z", progress=False).by == "head"
    estimated = interp.patching(model, tok, CLEAN, CORRUPT, " Mary", " John", method="gradient", check=2)
    assert estimated.method == "gradient" and estimated.scores.shape == p.scores.shape and estimated.clean_metric == p.clean_metric
    assert estimated.what == "attribution patching (gradient estimate)" and p.what == "activation patching" and p.checked == []
    # the two largest estimated moves, run exactly: patch's own entries there
    moves = (estimated.scores - estimated.corrupt_metric).abs()
    assert [(layer, j) for layer, j, _ in estimated.checked] == [divmod(int(i), n) for i in moves.flatten().argsort(descending=True)[:2]]
    assert [value for *_, value in estimated.checked] == pytest.approx([float(p.scores[layer, j]) for layer, j, _ in estimated.checked],
                                                                       abs=1e-5)
    cells = [(0, 9), (2, 13), (1, 0)]
    assert interp.patch_cells(model, ids_of(tok, CLEAN), ids_of(tok, CORRUPT), interp.logit_diff(tok.encode(" Mary")[0],
                              tok.encode(" John")[0]), cells) == pytest.approx([float(p.scores[c]) for c in cells], abs=1e-5)
    attr = interp.attribution(model, tok, CLEAN, " Mary", " John")
    assert attr.labels["answer"] == " Mary" and sum(attr.values()) == pytest.approx(attr.total, abs=TOL)


@pytest.mark.parametrize(("point", "by", "cells"), [("resid_pre", "position", [(0, 3), (1, 9), (2, 13)]),
                                                    ("attn.z", "head", [(1, 2), (2, 0)]), ("mlp.post", "position", [(2, 9)])])
def test_attribution_patching_is_the_first_order_step_of_patching(setup, tok_ids, point, by, cells):
    """Each entry is the metric's derivative along the straight line from the corrupt to the clean value of
    that piece (at the corrupt end) plus the corrupt metric: checked against central differences in float64."""
    import copy

    model, _, tok, _ = setup
    clean, corrupt = tok_ids
    model64 = copy.deepcopy(model).double()
    mary, john = tok.encode(" Mary")[0], tok.encode(" John")[0]

    def metric(logits):  # logit_diff's, kept in float64 (logit_diff reads the logits in float32)
        return (logits[:, -1, mary] - logits[:, -1, john]).mean()

    trainable_before = [p.requires_grad for p in model64.parameters()]
    estimate = interp.attribution_patch(model64, clean, corrupt, metric, point=point, by=by)
    assert estimate.shape == (L, corrupt.size(1) if by == "position" else H)
    assert [p.requires_grad for p in model64.parameters()] == trainable_before and not model64.points.fns
    assert all(p.grad is None for p in model64.parameters())  # no gradient was made for the weights
    with torch.no_grad():
        _, cache = model64.run_with_cache(clean, names=[f"h.{layer}.{point}" for layer, _ in cells])
        corrupt_metric = float(metric(model64(corrupt)))

        def along(layer: int, slot: int, alpha: float) -> float:
            def move(x, name):
                x, source = x.clone(), cache[name]
                index = (slice(None), slot) if by == "head" or point != "attn.z" else (slice(None), slice(None), slot)
                x[index] += alpha * (source[index] - x[index])
                return x

            with model64.hooks({f"h.{layer}.{point}": move}):
                return float(metric(model64(corrupt)))

        for layer, slot in cells:
            h = 1e-4
            slope = (along(layer, slot, h) - along(layer, slot, -h)) / (2 * h)
            assert float(estimate[layer, slot]) - corrupt_metric == pytest.approx(slope, rel=1e-4, abs=1e-6), (layer, slot)
    assert (estimate - corrupt_metric).abs().max() > 1e-3  # the estimates say something: not all the corrupt run's metric


def test_steering_equals_actadd_on_transformer_lens(setup):
    """ActAdd as its authors wrote it on TransformerLens: the vector from run_with_cache (the shorter prompt padded
    with spaces), added by a hook to the front positions of every full forward pass of a generation without a cache.
    Ours adds it once, to the prompt's pass, and decodes from the cache: the same tokens."""
    model, bridge, tok, _ = setup
    layer, coeff = 1, 8.0
    steering = interp.steering(model, tok, " Love", " Hate and fury", layer=layer, coeff=coeff)
    eot, space = 50256, tok.encode(" ")[0]
    plus, minus = [eot, *tok.encode(" Love")], [eot, *tok.encode(" Hate and fury")]
    plus += [space] * (len(minus) - len(plus))
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([plus, minus]), names_filter=f"blocks.{layer}.hook_resid_pre")
    vector = cache[f"blocks.{layer}.hook_resid_pre"][0] - cache[f"blocks.{layer}.hook_resid_pre"][1]  # (n, C)
    assert steering.vector.shape == (len(minus), SHAPE["n_embd"]) and steering.point == f"h.{layer}.resid_pre"
    assert (steering.vector - vector).abs().max() <= TOL and steering.vector[0].abs().max() == 0  # (<|endoftext|> in both)

    def add_front(resid, hook):
        resid = resid.clone()
        resid[:, : vector.size(0)] += coeff * vector
        return resid

    prompt = steering.prompt_ids(tok, "I hate you because you are")
    assert prompt[0] == eot
    theirs = list(prompt)
    with torch.no_grad():
        for _ in range(12):  # greedy, every step a full pass with the hook, as ActAdd's code generates
            logits = bridge.run_with_hooks(torch.tensor([theirs]), fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", add_front)])
            theirs.append(int(logits[0, -1].argmax()))
        plain = model.generate(torch.tensor([prompt]), 12, temperature=0.0)[0].tolist()
        with steering.applied(model):
            ours = model.generate(torch.tensor([prompt]), 12, temperature=0.0)[0].tolist()
    assert ours == theirs and ours != plain and not model.points.fns  # the steering changed the text, and left no hook behind
    # the side-by-side: same seed on both sides, so no steering (coeff 0) gives the same text twice
    idle = interp.steering(model, tok, " Love", " Hate and fury", layer=layer, coeff=0.0)
    same = interp.steer_text(model, tok, idle, "I hate you because you are", 10, samples=2, seed=3, top=4)
    assert same.plain == same.steered and same.plain[0] != same.plain[1] and all(b == a for _, b, a in same.raised)
    result = interp.steer_text(model, tok, steering, "I hate you because you are", 12, samples=1, temperature=0.0, top=4)
    assert result.steered == [tok.decode(ours[len(prompt):])] and result.plain == [tok.decode(plain[len(prompt):])]
    gains = [after - before for _, before, after in result.raised]
    assert len(gains) == 4 and gains == sorted(gains, reverse=True) and gains[0] > 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda m, t: interp.steering(m, t, "Love", "Hate", layer=L), "layer 3 does not exist"),
    (lambda m, t: interp.steering(m, t, "", "", layer=0), "give a text to steer"),
    (lambda m, t: interp.steer_text(m, t, interp.steering(m, t, " Love is all we need", layer=0), "Hi", 3), "steer a prompt of at least 6"),
    (lambda m, t: interp.patching(m, t, CLEAN, "When Mary went", " Mary", " John"), "same number of tokens"),
    (lambda m, t: interp.patching(m, t, CLEAN, CORRUPT, " Marylebone", " John"), "give one token"),
    (lambda m, t: interp.patch(m, [1, 2], [1, 2], interp.logit_diff(1), point="mlp.out", by="head"), "has no heads"),
    (lambda m, t: interp.patch(m, [1, 2], [1, 2], interp.logit_diff(1), point="ln_f.out"), "cannot patch at"),
    (lambda m, t: interp.ablate(m, [1, 2], [(L, 0)]), "does not exist"),
    (lambda m, t: interp.ablate(m, [1, 2], [(0, 0)], how="random"), "how must be"),
    (lambda m, t: interp.logit_attribution(m, [[1, 2], [3, 4]], 1), "one sequence"),
    (lambda m, t: interp.logit_lens(m, [SHAPE["vocab_size"]]), "outside"),
    (lambda m, t: interp.attribution_patch(m, [1, 2], [3, 4], lambda logits: 0.5), "needs a metric that returns a tensor"),
    (lambda m, t: interp.patching(m, t, CLEAN, CORRUPT, " Mary", " John", method="fast"), "method must be 'exact'"),
    (lambda m, t: interp.patch_cells(m, [1, 2], [3, 4], interp.logit_diff(1), [(0, 2)]), r"cell \(0, 2\) is outside the 3 x 2 map"),
])
def test_mistakes_are_input_errors(setup, call, message):
    model, _, tok, _ = setup
    with pytest.raises(InputError, match=message):
        call(model, tok)
    assert not model.points.fns and not model.training


def test_check_answer_equals_transformer_lens_test_prompt(setup):
    """TransformerLens's ``test_prompt`` prints what ``check_answer`` returns: the same tokens, ranks, top
    predictions, logits and probabilities (read from its printout), each answer token read with the earlier ones
    in the input; the per-block ranks equal the ranks in TL's own logit lens (``accumulated_resid``)."""
    import ast
    import contextlib
    import io
    import re

    from transformer_lens.utilities import test_prompt

    model, bridge, tok, _ = setup
    answer = " Mary and John"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), torch.no_grad():
        test_prompt(CLEAN, answer, bridge, prepend_space_to_answer=False, top_k=5)
    text = printed.getvalue()
    check = interp.check_answer(model, tok, CLEAN, answer, top_k=5)
    assert f"Tokenized prompt: {check.prompt_tokens}" in text and f"Tokenized answer: {check.answer_tokens}" in text
    assert ast.literal_eval(text.split("Ranks of the answer tokens: ")[1].strip()) == list(zip(check.answer_tokens, check.ranks))
    answers = re.findall(r"Rank: (\d+) +Logit: +(-?\d+\.\d\d) Prob: +(\d+\.\d\d)%", text)
    tops = re.findall(r"Top (\d+)th token\. Logit: +(-?\d+\.\d\d) Prob: +(\d+\.\d\d)% Token: \|(.*)\|", text)
    assert len(answers) == 3 and len(tops) == 15
    for a in range(3):
        assert int(answers[a][0]) == check.ranks[a] and answers[a][1] == f"{check.logits[a]:.2f}" and answers[a][2] == f"{100 * check.probs[a]:.2f}"
        assert [(t, f"{logit:.2f}", f"{100 * p:.2f}") for t, logit, p in check.top[a]] == [(t, lg, pr) for _, lg, pr, t in tops[5 * a : 5 * a + 5]]
    # the exact figures against TL's logits, and the lens ranks against its accumulated_resid
    ids = torch.tensor([[50256, *tok.encode(CLEAN), *tok.encode(answer)]])
    P = ids.size(1) - 3
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(ids)
        lensed = bridge.unembed(cache.accumulated_resid(apply_ln=True))[:, 0, P - 1 : -1]  # (L + 1, A, V)
    targets = ids[0, P:]
    torch.testing.assert_close(torch.tensor(check.logits), logits[0, P - 1 : -1].gather(-1, targets[:, None])[:, 0], atol=TOL, rtol=0)
    torch.testing.assert_close(torch.tensor(check.probs), logits[0, P - 1 : -1].softmax(-1).gather(-1, targets[:, None])[:, 0],
                               atol=1e-6, rtol=1e-4)
    theirs = (lensed > lensed.gather(-1, targets.expand(L + 1, 3)[..., None])).sum(-1)  # (L + 1, A)
    assert check.layer_ranks.shape == (L + 1, 3) and torch.equal(check.layer_ranks, theirs)
    assert check.layer_ranks[-1].tolist() == check.ranks


def test_check_answer_without_eot_and_its_errors(setup):
    import re

    model, _, tok, _ = setup
    plain = interp.check_answer(model, tok, CLEAN, " Mary", prepend_eot=False)
    assert plain.prompt_tokens[0] == "When" and len(plain.top[0]) == 10
    first = interp.check_answer(model, tok, "", " Mary")  # just <|endoftext|>: what the model writes first
    assert first.prompt_tokens == ["<|endoftext|>"] and first.answer_tokens == [" Mary"]
    from gpt2lab import Tokenizer

    bare = Tokenizer(tok.mergeable_ranks, {})  # GPT-2's merges, no special tokens
    with pytest.raises(InputError, match=re.escape("no <|endoftext|> to begin the prompt with: pass prepend_eot=False (gpt2lab answer --no-eot)")):
        interp.check_answer(model, bare, CLEAN, " Mary")
    assert interp.check_answer(model, bare, CLEAN, " Mary", prepend_eot=False).ranks == plain.ranks
    with pytest.raises(InputError, match="the answer is empty"):
        interp.check_answer(model, tok, CLEAN, "")
    with pytest.raises(InputError, match="more than|at most"):
        interp.check_answer(model, tok, CLEAN, " Mary" * 200)
