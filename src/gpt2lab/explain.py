"""The architecture explainer: what every part of a GPT-2 is, what it costs, in the model's own numbers.

    >>> import gpt2lab
    >>> ex = gpt2lab.explain("gpt2")             # a preset, a GPT2Config, a GPT2, a checkpoint dir or hub id
    >>> ex.params["total"], ex.params["total_untied"]
    (124439808, 163037184)
    >>> print(ex.to_text())                      # or ex.to_markdown(), or ex.to_dict() for a notebook

``explain_repr(text)`` does the same from the text ``print(model)`` shows, for a Hugging Face
``GPT2LMHeadModel`` (any transformers version, with or without indentation) or for gpt2lab's ``GPT2``.

Every parameter count comes from ``config.parameter_counts`` (the one place that arithmetic lives);
a printed tree is first turned into a ``GPT2Config``, and the shapes it printed are checked against it.
Memory and FLOPs are estimates with their formulas printed next to them.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import PRESETS, GPT2Config, parameter_counts
from .errors import ConfigError
from .flops import flops_estimate  # the one FLOPs convention (MFU in training uses it too)

# ---------------------------------------------------------------------------------------------
# Parsing print(model)
# ---------------------------------------------------------------------------------------------


@dataclass
class ReprNode:
    """One module of a printed tree: ``(key): [N x ]Cls(args)`` or a container with children."""

    key: str | None  # "wte", "0-11", "0"; None for the root
    cls: str  # "Embedding", "GPT2Block", ...
    args: str | None  # the text inside a leaf's parentheses; None for a container
    children: list["ReprNode"] = field(default_factory=list)
    repeat: int = 1  # 12 for "(0-11): 12 x Block(" (newer torch folds identical modules)
    line: int = 0  # 1-based line of the source text where it starts
    role: str = ""  # what it is in a GPT-2, set by the interpreter ("wte", "block.attn.c_attn", ...)

    @property
    def is_container(self) -> bool:
        return self.args is None


_IDENT = re.compile(r"[A-Za-z_][\w.]*")
_CHILD = re.compile(r"\(\s*([\w.\-]+)\s*\)\s*:\s*(?:(\d+)\s*x\s+)?")


class _Parser:
    """Recursive descent over the characters, so nesting comes from the parentheses and not from
    indentation (pasted text often loses it). Lines it cannot read are collected, not guessed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\n", text)]
        self.unknown: list[tuple[int, str]] = []  # (line, text) of what could not be read

    def line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos)

    def line_text(self, line: int) -> str:
        start = self.line_starts[line - 1]
        end = self.line_starts[line] - 1 if line < len(self.line_starts) else len(self.text)
        return self.text[start:end].strip()

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def skip_line(self) -> None:
        """Report the rest of the current line as unknown and move past it."""
        line = self.line_of(self.pos)
        self.unknown.append((line, self.line_text(line)))
        nl = self.text.find("\n", self.pos)
        self.pos = len(self.text) if nl < 0 else nl + 1

    def parse(self) -> ReprNode:
        # the root is the first "Name(" followed by a child "(key):"; anything before it
        # (a ">>> print(model)" prompt, a heading) is reported
        root = re.compile(r"([A-Za-z_]\w*)\(\s*\(\s*[\w.\-]+\s*\)\s*:")
        m = root.search(self.text)
        if m is None:
            raise ConfigError("no module tree found: expected the text print(model) shows, e.g. 'GPT2LMHeadModel(' then '(transformer): ...'")
        for line in range(1, self.line_of(m.start())):
            if self.line_text(line):
                self.unknown.append((line, self.line_text(line)))
        self.pos = m.start()
        node = self.module(key=None, repeat=1)
        if node is None:
            raise ConfigError("the module tree is cut short: its parentheses do not close; paste the whole print(model) output")
        self.skip_ws()
        while self.pos < len(self.text):  # trailing text after the tree
            self.skip_line()
            self.skip_ws()
        return node

    def module(self, key: str | None, repeat: int) -> ReprNode | None:
        start = self.pos
        m = _IDENT.match(self.text, self.pos)
        if m is None or self.text[m.end() : m.end() + 1] != "(":
            return None
        self.pos = m.end() + 1
        cls = m.group(0)
        self.skip_ws()
        if _CHILD.match(self.text, self.pos):  # a container
            node = ReprNode(key, cls, None, repeat=repeat, line=self.line_of(start))
            while True:
                self.skip_ws()
                if self.pos >= len(self.text):
                    return None
                if self.text[self.pos] == ")":
                    self.pos += 1
                    return node
                child = _CHILD.match(self.text, self.pos)
                if child is None:
                    self.skip_line()
                    continue
                self.pos = child.end()
                sub = self.module(child.group(1), int(child.group(2) or 1))
                if sub is None:
                    self.pos = child.start()
                    self.skip_line()
                    continue
                node.children.append(sub)
        # a leaf: its arguments run to the matching ")" on the same line
        depth, i = 1, self.pos
        while i < len(self.text) and depth:
            ch = self.text[i]
            if ch == "\n":
                break
            depth += (ch == "(") - (ch == ")")
            i += 1
        if depth:
            self.pos = start
            return None
        args = self.text[self.pos : i - 1].strip()
        self.pos = i
        return ReprNode(key, cls, args, repeat=repeat, line=self.line_of(start))


def parse_repr(text: str) -> tuple[ReprNode, list[tuple[int, str]]]:
    """Parse ``print(model)`` text into a tree; also return the (line, text) it could not read."""
    parser = _Parser(text.replace("\r\n", "\n"))
    root = parser.parse()
    return root, parser.unknown


def _ints(args: str) -> list[int]:
    return [int(x) for x in re.findall(r"(?<![\w.])\d+(?![\w.])", args)]


def _kwarg(args: str, name: str) -> str | None:
    m = re.search(rf"\b{name}\s*=\s*([^,()]+)", args)
    return m.group(1).strip().strip("'\"") if m else None


# ---------------------------------------------------------------------------------------------
# From a printed tree to a GPT2Config
# ---------------------------------------------------------------------------------------------

_GELU_TANH = {"NewGELUActivation", "GELUTanh", "PytorchGELUTanh", "FastGELUActivation", "gelu_new"}
_GELU_EXACT = {"GELUActivation"}


@dataclass
class _Linear:
    """What a printed Linear or Conv1D says: in/out widths (None when not printed) and a bias flag."""

    kind: str  # "Linear" or "Conv1D"
    n_in: int | None
    n_out: int | None
    bias: bool


def _read_linear(node: ReprNode) -> _Linear | None:
    if node.is_container:
        return None
    if node.cls == "Linear":
        n_in, n_out = _kwarg(node.args, "in_features"), _kwarg(node.args, "out_features")
        if n_in is None or n_out is None:
            nums = _ints(node.args)
            n_in, n_out = (nums + [None, None])[:2]
        return _Linear("Linear", int(n_in) if n_in else None, int(n_out) if n_out else None, _kwarg(node.args, "bias") != "False")
    if node.cls == "Conv1D":
        nf, nx = _kwarg(node.args, "nf"), _kwarg(node.args, "nx")  # transformers >= 4.4x prints these
        return _Linear("Conv1D", int(nx) if nx else None, int(nf) if nf else None, True)  # HF's Conv1D always has a bias
    return None


def _children(node: ReprNode) -> dict[str, ReprNode]:
    return {c.key: c for c in node.children}


class _Interpreter:
    """Give every node of a printed tree its GPT-2 role and derive the config it describes."""

    def __init__(self, root: ReprNode, unknown_lines: list[tuple[int, str]]) -> None:
        self.root = root
        self.unknown = [f"line {n}: {t}" for n, t in unknown_lines if t]
        self.notes: list[str] = []
        self.problems: list[str] = []
        self.linears: dict[str, list[tuple[ReprNode, _Linear]]] = {}
        self.layer_norms: list[ReprNode] = []
        self.dropouts: dict[str, float] = {}
        self.activations: set[str] = set()

    def report(self, node: ReprNode, what: str = "unknown module, not counted") -> None:
        text = f"({node.key}): {node.cls}(" + (node.args + ")" if node.args is not None else "...)")
        self.unknown.append(f"line {node.line}: {text} ({what})")

    def run(self) -> tuple[GPT2Config, bool]:
        root = self.root
        kids = _children(root)
        if "transformer" in kids:
            body, head = kids["transformer"], kids.get("lm_head")
            root.role = "model"
            body.role = "transformer"
            for c in root.children:
                if c.key not in ("transformer", "lm_head"):
                    self.report(c)
        else:
            body, head = root, None
            root.role = "transformer"
        parts = _children(body)
        for c in body.children:
            if c.key not in ("wte", "wpe", "drop", "h", "ln_f"):
                self.report(c)
        for name in ("wte", "wpe", "h"):
            if name not in parts:
                raise ConfigError(f"no ({name}) in the printed tree: is this print(model) of a GPT-2? (expected wte, wpe, h, ln_f)")
        V, C = self.embedding(parts["wte"], "wte")
        P, C2 = self.embedding(parts["wpe"], "wpe")
        if C2 != C:
            raise ConfigError(f"line {parts['wpe'].line}: position embedding is {C2} wide but the token embedding is {C} wide")
        if "drop" in parts:
            self.dropout(parts["drop"], "drop")
        if "ln_f" in parts:
            self.layer_norm(parts["ln_f"], "ln_f", C)
        else:
            self.problems.append("no final LayerNorm (ln_f) printed; counted as GPT-2 has one")
        parts["h"].role = "h"
        n_layer = 0
        for block in parts["h"].children:
            if block.is_container and re.fullmatch(r"\d+(-\d+)?", block.key or ""):
                self.block(block, C)
                n_layer += block.repeat
            else:
                self.report(block)
        if n_layer == 0:
            raise ConfigError(f"line {parts['h'].line}: the block list (h) holds no blocks")
        if head is not None:
            head.role = "lm_head"
            lin = _read_linear(head)
            if lin is None or (lin.n_in, lin.n_out) not in ((C, V), (None, None)):
                self.problems.append(f"line {head.line}: lm_head should map {C} -> {V}")
            elif lin.bias:
                self.problems.append(f"line {head.line}: lm_head has a bias, which GPT-2 does not; not counted")
        else:
            self.notes.append("no lm_head printed (a GPT2Model without the language-model head): the head below is GPT-2's tied one")
        F_ = self.mlp_width(C)
        bias, qkv_bias = self.bias_flags()
        eps = self.epsilon()
        act = self.activation()
        if C % 64 == 0:
            n_head = C // 64
            self.notes.append(f"the number of heads is not printed; assumed {n_head} head{'s' * (n_head > 1)} of 64 as in every released GPT-2 "
                              "(no count below depends on it)")
        else:
            n_head = 1
            self.notes.append("the number of heads is not printed; assumed 1 (no count below depends on it)")
        self.notes.append("print(model) cannot show whether lm_head shares wte's matrix; counted tied, as GPT-2 does "
                          "(the untied total is shown too)")
        try:
            config = GPT2Config(
                vocab_size=V, block_size=P, n_layer=n_layer, n_head=n_head, n_embd=C, n_inner=None if F_ == 4 * C else F_,
                embd_pdrop=self.dropouts.get("drop", 0.1), attn_pdrop=self.dropouts.get("attn_dropout", 0.1),
                resid_pdrop=self.dropouts.get("resid_dropout", self.dropouts.get("dropout", 0.1)),
                layer_norm_epsilon=eps, bias=bias, qkv_bias=qkv_bias, activation=act,
            )
        except ConfigError as err:
            raise ConfigError(f"the printed shapes do not make a valid GPT-2: {err}") from None
        self.check_linears(config)
        return config, head is not None

    # -- components ----------------------------------------------------------------------------

    def embedding(self, node: ReprNode, role: str) -> tuple[int, int]:
        nums = _ints(node.args or "")
        if node.cls != "Embedding" or len(nums) < 2:
            raise ConfigError(f"line {node.line}: expected ({role}): Embedding(N, width), got {node.cls}({node.args or '...'})")
        node.role = role
        return nums[0], nums[1]

    def dropout(self, node: ReprNode, name: str) -> None:
        node.role = "dropout"
        p = _kwarg(node.args or "", "p")
        if p is not None:
            self.dropouts.setdefault(name, float(p))

    def layer_norm(self, node: ReprNode, role: str, C: int) -> None:
        if node.cls != "LayerNorm" or node.is_container:
            self.report(node, "expected a LayerNorm")
            return
        node.role = role
        self.layer_norms.append(node)
        nums = _ints(node.args.split("eps")[0])
        if nums and nums[0] != C:
            self.problems.append(f"line {node.line}: LayerNorm is {nums[0]} wide, the stream is {C}")

    def block(self, block: ReprNode, C: int) -> None:
        block.role = "block"
        kids = _children(block)
        for c in block.children:
            if c.key in ("ln_1", "ln_2"):
                self.layer_norm(c, f"block.{c.key}", C)
            elif c.key == "attn" and c.is_container:
                c.role = "block.attn"
                for a in c.children:
                    if a.key in ("c_attn", "c_proj") and _read_linear(a):
                        a.role = f"block.attn.{a.key}"
                        self.linears.setdefault(a.role, []).append((a, _read_linear(a)))
                    elif a.key in ("attn_dropout", "resid_dropout") and a.cls == "Dropout":
                        self.dropout(a, a.key)
                    else:
                        self.report(a)
            elif c.key == "mlp" and c.is_container:
                c.role = "block.mlp"
                for a in c.children:
                    if a.key in ("c_fc", "c_proj") and _read_linear(a):
                        a.role = f"block.mlp.{a.key}"
                        self.linears.setdefault(a.role, []).append((a, _read_linear(a)))
                    elif a.key == "act" and not a.is_container and (a.cls in _GELU_TANH | _GELU_EXACT or a.cls == "GELU"):
                        a.role = "block.mlp.act"
                        tanh = a.cls in _GELU_TANH or "tanh" in (a.args or "")
                        self.activations.add("gelu_tanh" if tanh else "gelu")
                    elif a.key == "dropout" and a.cls == "Dropout":
                        self.dropout(a, "dropout")
                    else:
                        self.report(a)
            else:
                self.report(c)
        for part in ("ln_1", "attn", "ln_2", "mlp"):
            if part not in kids:
                self.problems.append(f"line {block.line}: block has no ({part}); counted as GPT-2's")

    def mlp_width(self, C: int) -> int:
        widths = {lin.n_out for _, lin in self.linears.get("block.mlp.c_fc", []) if lin.n_out}
        widths |= {lin.n_in for _, lin in self.linears.get("block.mlp.c_proj", []) if lin.n_in}
        if len(widths) > 1:
            raise ConfigError(f"the MLPs have different widths ({sorted(widths)}); gpt2lab explains stacks of identical blocks")
        if widths:
            return widths.pop()
        return 4 * C

    def bias_flags(self) -> tuple[bool, bool]:
        others = [lin.bias for role in ("block.attn.c_proj", "block.mlp.c_fc", "block.mlp.c_proj") for _, lin in self.linears.get(role, [])]
        ln_bias = [_kwarg(n.args or "", "bias") for n in self.layer_norms]
        others += [b != "False" for b in ln_bias if b is not None]
        qkv = [lin.bias for _, lin in self.linears.get("block.attn.c_attn", [])]
        bias = all(others) if others else True
        if others and any(others) != bias:
            self.problems.append("some layers have biases and others not; counted without biases")
        return bias, all(qkv) if qkv else True

    def epsilon(self) -> float:
        eps = {float(e) for n in self.layer_norms if (e := _kwarg(n.args or "", "eps")) is not None}
        if not eps:
            if self.layer_norms:
                self.notes.append("LayerNorm widths and epsilon are not printed (gpt2lab's LayerNorm()); "
                                  "width taken from the embeddings, epsilon 1e-5")
            return 1e-5
        return eps.pop()

    def activation(self) -> str:
        if not self.activations:
            self.notes.append("the activation is not printed; GPT-2's tanh-approximated GELU assumed")
            return "gelu_tanh"
        if len(self.activations) > 1:
            self.problems.append("blocks use different GELUs; the tanh one is assumed")
            return "gelu_tanh"
        return next(iter(self.activations))

    def check_linears(self, config: GPT2Config) -> None:
        C, F_ = config.n_embd, config.mlp_dim
        expect = {"block.attn.c_attn": (C, 3 * C), "block.attn.c_proj": (C, C), "block.mlp.c_fc": (C, F_), "block.mlp.c_proj": (F_, C)}
        inferred = []
        for role, (n_in, n_out) in expect.items():
            for node, lin in self.linears.get(role, []):
                if lin.n_in is None or lin.n_out is None:
                    inferred.append(role)
                elif (lin.n_in, lin.n_out) != (n_in, n_out):
                    self.problems.append(f"line {node.line}: {role.split('.', 1)[1]} maps {lin.n_in} -> {lin.n_out}, "
                                         f"a GPT-2 of width {C} has {n_in} -> {n_out}; counted as GPT-2's")
        if inferred:
            mlp = "(the MLP width 4 x n_embd is GPT-2's: Conv1D() does not print it)" if "block.mlp.c_fc" in inferred else ""
            self.notes.append(
                f"Conv1D() lines carry no shapes (older transformers); inferred from the width {C}: "
                f"c_attn {C} -> {3 * C}, attn.c_proj {C} -> {C}, c_fc {C} -> {F_}, mlp.c_proj {F_} -> {C} {mlp}".rstrip()
            )
        kinds = {lin.kind for entries in self.linears.values() for _, lin in entries}
        self.linear_kind = "Conv1D" if "Conv1D" in kinds else "Linear"


# ---------------------------------------------------------------------------------------------
# The explanation
# ---------------------------------------------------------------------------------------------


@dataclass
class TreeLine:
    """One line of the annotated ``print(model)`` tree."""

    depth: int
    text: str  # "(wte): Embedding(50257, 768)" or ")" for a closing line
    params: int | None  # parameters of this module and everything under it (all repeats); None for ")"
    output_shape: tuple[int, ...] | None
    note: str = ""  # "tied to wte", "12 x 7,087,872", "not counted"


@dataclass
class Step:
    """One line of the parameter arithmetic: what, the formula in the model's numbers, the value."""

    label: str
    formula: str
    value: int
    level: int = 1  # 0: section heading, 1: item, 2: sub-total


@dataclass
class Explanation:
    """Everything ``gpt2lab explain`` prints, as data. ``to_text()`` / ``to_markdown()`` render it."""

    source: str
    config: GPT2Config
    batch: int
    seq_len: int
    tree: list[TreeLine]
    components: list[tuple[str, str]]  # (component, one plain-language sentence)
    params: dict[str, int]  # parameter_counts(config) plus "total_untied" and "total_tied"
    steps: list[Step]
    memory: dict[str, Any]
    flops: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # assumptions made (inferred shapes...)
    unknown: list[str] = field(default_factory=list)  # printed lines that were not understood
    linear_kind: str = "Linear"  # how the projections are stored: "Linear" (gpt2lab) or "Conv1D" (HF)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d

    def to_text(self) -> str:
        return _render(self, markdown=False)

    def to_markdown(self) -> str:
        return _render(self, markdown=True)

    def __str__(self) -> str:
        return self.to_text()


def _fmt(n: int | float) -> str:
    return f"{n:,}" if isinstance(n, int) or float(n).is_integer() else f"{n:,.2f}"


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n):,} B"


def _flops(n: float) -> str:
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{int(n):,} FLOP"


def parameter_steps(config: GPT2Config) -> tuple[dict[str, int], list[Step]]:
    """The parameter arithmetic, step by step; every value is read from ``parameter_counts``.

    The formula strings are rebuilt from the config and checked to give the same values, so the
    words cannot drift from the numbers.
    """
    counts = dict(parameter_counts(config))
    untied = parameter_counts(config.replace(tie_word_embeddings=False))["total"]
    tied = parameter_counts(config.replace(tie_word_embeddings=True))["total"]
    counts["total_untied"], counts["total_tied"] = untied, tied
    C, V, F_, L, P = config.n_embd, config.vocab_size, config.mlp_dim, config.n_layer, config.block_size
    b, qb = config.bias, config.qkv_bias

    def lin(n_in: int, n_out: int, bias: bool) -> tuple[str, int]:
        return f"{n_in:,} x {n_out:,}" + (f" + {n_out:,}" if bias else ""), n_in * n_out + (n_out if bias else 0)

    ln_formula, ln_value = (f"{C:,} + {C:,} (scale and shift)", 2 * C) if b else (f"{C:,} (scale)", C)
    rows: list[tuple[str, str, int, str | None, int]] = [  # label, formula, value by the formula, key, level
        ("Embeddings", "", 0, None, 0),
        ("wte: token embedding", f"{V:,} tokens x {C:,}", V * C, "wte", 1),
        ("wpe: position embedding", f"{P:,} positions x {C:,}", P * C, "wpe", 1),
        ("One block", "", 0, None, 0),
        ("ln_1", ln_formula, ln_value, "block.ln_1", 1),
        ("attn.c_attn (Q, K, V fused)", *lin(C, 3 * C, qb), "block.attn.c_attn", 1),
        ("attn.c_proj", *lin(C, C, b), "block.attn.c_proj", 1),
        ("ln_2", ln_formula, ln_value, "block.ln_2", 1),
        ("mlp.c_fc", *lin(C, F_, b), "block.mlp.c_fc", 1),
        ("mlp.c_proj", *lin(F_, C, b), "block.mlp.c_proj", 1),
        ("per block", "ln_1 + attn + ln_2 + mlp", counts["block.ln_1"] * 2 + counts["block.attn"] + counts["block.mlp"], "per_block", 2),
        (f"all {L} blocks", f"{L} x {counts['per_block']:,}", L * counts["per_block"], None, 2),
        ("Output", "", 0, None, 0),
        ("ln_f: final LayerNorm", ln_formula, ln_value, "ln_f", 1),
        ("lm_head", "tied: reuses wte, no new parameters" if config.tie_word_embeddings else f"{C:,} x {V:,} (untied)",
         0 if config.tie_word_embeddings else C * V, "lm_head", 1),
        ("Total" + (" (tied)" if config.tie_word_embeddings else " (untied)"),
         "embeddings + blocks + ln_f + lm_head", counts["total"], "total", 2),
    ]
    if config.tie_word_embeddings:
        rows.append(("Total if untied", f"{tied:,} + {V:,} x {C:,}", tied + V * C, "total_untied", 2))
    else:
        rows.append(("Total if tied", f"{untied:,} - {V:,} x {C:,}", untied - V * C, "total_tied", 2))
    steps = []
    for label, formula, value, key, level in rows:
        if key is not None and counts[key] != value:  # pragma: no cover - a bug in one of the two
            raise AssertionError(f"parameter arithmetic disagrees for {key}: {value} vs parameter_counts {counts[key]}")
        steps.append(Step(label, formula, value, level))
    return counts, steps


def memory_estimate(config: GPT2Config, batch: int, seq_len: int, params: int) -> dict[str, Any]:
    """Bytes for the weights, the KV cache and training, with the formulas used.

    Activations (what backward needs, per token and block): the inputs of ln_1, c_attn, c_proj,
    ln_2, c_fc, the GELU and mlp.c_proj (1 + 1 + 1 + 1 + 1 + 4 + 4 = 13 x C) plus q, k, v (3 x C):
    16 x C values; the attention probabilities add H x T values per token on the explicit path
    (flash attention recomputes them instead). After the blocks: ln_f and lm_head inputs (2 x C)
    and the logits with their softmax (2 x V). Dropout masks and small buffers are left out.
    """
    C, L, H, V, P = config.n_embd, config.n_layer, config.n_head, config.vocab_size, config.block_size
    B, T = batch, seq_len
    kv_per_token_values = 2 * L * C  # a key and a value vector of width C, in every layer
    act_per_token = L * 16 * C + 2 * C + 2 * V
    act_attn_per_token = L * H * T
    act_values = B * T * act_per_token
    act_values_explicit = B * T * (act_per_token + act_attn_per_token)
    return {
        "weights": {"fp32": 4 * params, "bf16": 2 * params, "int8": params},
        "kv_cache": {
            "values_per_token": kv_per_token_values,
            "per_token_fp32": 4 * kv_per_token_values,
            "per_token_bf16": 2 * kv_per_token_values,
            "full_context_tokens": B * P,
            "full_context_fp32": 4 * kv_per_token_values * B * P,
            "full_context_bf16": 2 * kv_per_token_values * B * P,
            "formula": "2 (key and value) x n_layer x n_embd values per token",
        },
        "training": {
            "weights_fp32": 4 * params,
            "grads_fp32": 4 * params,
            "adamw_fp32": 8 * params,  # two moments per parameter
            "activation_values_per_token": act_per_token,
            "activations_fp32": 4 * act_values,
            "activations_fp32_explicit_attention": 4 * act_values_explicit,
            "total_fp32": 16 * params + 4 * act_values,
            "formula": "weights 4N + gradients 4N + AdamW moments 8N bytes; activations "
            "B x T x (n_layer x 16 x n_embd + 2 x n_embd + 2 x vocab) values x 4 bytes "
            "(+ B x T x n_layer x n_head x T for attention probabilities if they are kept)",
        },
    }


def _components(config: GPT2Config, counts: dict[str, int], linear_kind: str) -> list[tuple[str, str]]:
    C, V, P, L, H, D, F_ = (config.n_embd, config.vocab_size, config.block_size, config.n_layer, config.n_head,
                            config.head_dim, config.mlp_dim)
    ln = counts["block.ln_1"]
    gelu = ("GELU, in GPT-2's tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))"
            if config.activation == "gelu_tanh" else "the exact GELU x Phi(x)")
    p = config.embd_pdrop
    mlp_share = 100 * counts["block.mlp"] / counts["per_block"]
    tie = (f"It is tied to the token embedding: the same {V:,} x {C:,} matrix reads tokens in and scores them out, "
           f"so it adds no parameters (untied it would add {V * C:,})." if config.tie_word_embeddings
           else f"It is untied: its own {C:,} x {V:,} matrix, {V * C:,} parameters.")
    return [
        ("Token embedding (wte)", f"turns each of the {V:,} token ids into a {C:,}-number vector: "
                                  f"a table of {V:,} x {C:,} = {V * C:,} learned numbers."),
        ("Position embedding (wpe)", f"adds a learned {C:,}-number vector for each of the {P:,} positions, so the model "
                                     f"knows word order; {P:,} tokens is the longest input it can read."),
        ("Dropout (drop, attn_dropout, resid_dropout)",
         f"during training zeroes {p:.0%} of the numbers at random and scales the rest by 1/{1 - p:g}; "
         "at inference it does nothing. No parameters." if p > 0 else
         "switched off here (p = 0): it passes numbers through unchanged. With p > 0 it would zero that share of the "
         "numbers at random during training and scale the rest by 1/(1 - p). No parameters."),
        ("Block (h.0 ... h.%d)" % (L - 1), f"{L} identical blocks, each x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)). "
                                         f"The additions keep a {C:,}-wide residual stream running through all {L}; "
                                         f"each block has {counts['per_block']:,} parameters."),
        ("LayerNorm (ln_1, ln_2)", f"rescales each token's {C:,} numbers to mean 0 and variance 1 "
                                   f"(epsilon {config.layer_norm_epsilon:g}), then applies a learned scale"
                                   + (" and shift" if config.bias else "") + f": {ln:,} parameters."),
        ("Attention with fused QKV (attn)", f"c_attn makes the queries, keys and values of all {H} heads in one "
                                            f"{C:,} -> {3 * C:,} product; each head ({D} wide) scores its query against the "
                                            f"keys of this and every earlier token, softmaxes the scores and averages the "
                                            f"values; c_proj ({C:,} -> {C:,}) mixes the heads back into the stream."),
        ("Conv1D vs Linear", "Hugging Face stores these projections as Conv1D, a linear layer whose weight is kept "
                             f"transposed (in x out, e.g. {C:,} x {3 * C:,}); gpt2lab uses nn.Linear (out x in) with the numbers "
                             "left in Conv1D's memory order, so a checkpoint loads without a transpose. Same function, same count."
                             + (" This tree is Hugging Face's." if linear_kind == "Conv1D" else "")),
        ("MLP with GELU (mlp)", f"c_fc widens each token's vector from {C:,} to {F_:,}, {gelu} bends it, and c_proj "
                                f"narrows it back to {C:,}: {mlp_share:.0f}% of each block's parameters."),
        ("Final LayerNorm (ln_f)", f"normalises the stream once more after the last block ({counts['ln_f']:,} parameters)."),
        ("LM head and weight tying (lm_head)", f"scores each of the {V:,} vocabulary tokens by a dot product with the final "
                                               f"{C:,}-number vector: the logits. {tie}"),
    ]


_OUT_SHAPES = {
    "model": "BTV", "lm_head": "BTV", "transformer": "BTC", "wte": "BTC", "wpe": "1TC", "drop": "BTC", "dropout": "BTC",
    "h": "BTC", "block": "BTC", "ln_f": "BTC", "block.ln_1": "BTC", "block.ln_2": "BTC", "block.attn": "BTC",
    "block.attn.c_attn": "BT3", "block.attn.c_proj": "BTC", "block.mlp": "BTC", "block.mlp.c_fc": "BTF",
    "block.mlp.act": "BTF", "block.mlp.c_proj": "BTC",
}


def _shape(role: str, key: str | None, config: GPT2Config, B: int, T: int) -> tuple[int, ...] | None:
    if role == "dropout" and key == "attn_dropout":
        return (B, config.n_head, T, T)  # on the attention probabilities
    if role == "dropout" and key == "dropout":
        return (B, T, config.n_embd)
    spec = _OUT_SHAPES.get(role)
    if spec is None:
        return None
    dims = {"B": B, "T": T, "C": config.n_embd, "V": config.vocab_size, "F": config.mlp_dim, "3": 3 * config.n_embd, "1": 1}
    return tuple(dims[c] for c in spec)


def _annotate(root: ReprNode, config: GPT2Config, counts: dict[str, int], B: int, T: int, printed: bool) -> list[TreeLine]:
    """The printed tree again, each line with the parameters under it and its output shape."""
    lines: list[TreeLine] = []

    def params(node: ReprNode) -> int:
        if node.role == "lm_head":
            return counts["lm_head"]
        if node.role in ("wte", "wpe", "ln_f") or node.role.startswith("block."):
            if node.role == "block.mlp.act":
                return 0
            return counts[node.role] * (node.repeat if node.role.startswith("block.") else 1)
        if node.role == "block":
            return counts["per_block"] * node.repeat
        return sum(params(c) for c in node.children) * node.repeat

    def walk(node: ReprNode, depth: int) -> None:
        head = f"({node.key}): " if node.key is not None else ""
        head += f"{node.repeat} x " if node.repeat > 1 else ""
        head += f"{node.cls}(" + ("" if node.is_container else f"{node.args})")
        n = params(node) if node.role else None
        note = ""
        if not node.role:
            note = "not understood, not counted"
        elif node.role == "lm_head" and config.tie_word_embeddings:
            note = "tied to wte"
        elif node.role in ("block",) and node.repeat > 1:
            note = f"{node.repeat} x {counts['per_block']:,} (lines below: one block)"
        elif printed and node.cls in ("Conv1D", "LayerNorm") and not node.args:
            note = "shape inferred from the widths"
        lines.append(TreeLine(depth, head, n, _shape(node.role, node.key, config, B, T) if node.role else None, note))
        if node.is_container:
            for child in node.children:
                walk(child, depth + 1)
            lines.append(TreeLine(depth, ")", None, None))

    walk(root, 0)
    return lines


def _config_tree(config: GPT2Config) -> ReprNode:
    """gpt2lab's own ``print(model)`` for this config (built on the meta device: no memory)."""
    import torch

    from .model import GPT2

    with torch.device("meta"):
        model = GPT2(config)
    root, _ = parse_repr(repr(model))
    return root


def _build(root: ReprNode, unknown: list[tuple[int, str]], source: str, batch: int, seq_len: int | None,
           config: GPT2Config | None = None) -> Explanation:
    interp = _Interpreter(root, unknown)
    derived, _ = interp.run()
    printed = config is None  # the config comes from printed text, not from the model itself
    notes = interp.notes + interp.problems if printed else []
    config = config or derived
    T = seq_len if seq_len is not None else config.block_size
    if not isinstance(T, int) or T < 1 or T > config.block_size:
        raise ConfigError(f"--seq-len must be between 1 and the context length {config.block_size}, got {T}")
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--batch must be a positive integer, got {batch}")
    counts, steps = parameter_steps(config)
    return Explanation(
        source=source,
        config=config,
        batch=batch,
        seq_len=T,
        tree=_annotate(root, config, counts, batch, T, printed),
        components=_components(config, counts, getattr(interp, "linear_kind", "Linear")),
        params=counts,
        steps=steps,
        memory=memory_estimate(config, batch, T, counts["total"]),
        flops=flops_estimate(config, T),
        notes=notes,
        unknown=interp.unknown,
        linear_kind=getattr(interp, "linear_kind", "Linear"),
    )


def explain_repr(text: str, *, seq_len: int | None = None, batch: int = 1, source: str = "printed model") -> Explanation:
    """Explain the model whose ``print(model)`` text is given (HF GPT-2 or gpt2lab's GPT2).

    Counts come from the printed shapes (embedding sizes, LayerNorm widths, Linear in/out);
    ``Conv1D()`` lines of older transformers print no shapes and are inferred from the widths,
    which ``notes`` says. Lines that are not understood are listed in ``unknown``, never guessed.
    """
    root, unknown = parse_repr(text)
    return _build(root, unknown, source, batch, seq_len)


def _config_from_name(name: str) -> tuple[GPT2Config, str]:
    key = name.removeprefix("openai-community/")
    if key in PRESETS:
        return GPT2Config.from_preset(key), f"preset {key}"
    path = Path(name).expanduser()
    if path.exists():
        from .weights import resolve_checkpoint_dir

        directory = resolve_checkpoint_dir(path)
        return GPT2Config.from_json_file(directory / "config.json"), f"checkpoint {directory}"
    looks_like_hub = re.fullmatch(r"[\w.\-]+/[\w.\-]+", name) is not None
    if not looks_like_hub:
        raise ConfigError(f"{name!r} is neither a preset ({', '.join(PRESETS)}), nor an existing checkpoint directory, "
                          "nor a hub id like owner/name")
    try:  # only config.json is needed: no weights are downloaded to explain a model
        from huggingface_hub import hf_hub_download

        file = hf_hub_download(name, "config.json")
    except Exception as err:  # the hub library raises many types; all mean "could not get it"
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"could not get config.json of {name!r} from the Hugging Face hub ({reason[:160]}); "
                          "check the name and network, or pass a local checkpoint directory") from None
    return GPT2Config.from_json_file(file), f"hub {name}"


def explain(model_or_config: Any = "gpt2", *, seq_len: int | None = None, batch: int = 1,
            from_repr: str | None = None) -> Explanation:
    """Explain a GPT-2: its module tree, each component in plain words, the parameter arithmetic,
    memory and FLOPs, all in this model's numbers.

    Args:
        model_or_config: a preset name ("gpt2"...), a ``GPT2Config``, a ``GPT2``, a checkpoint
            directory, a hub id (only its config.json is fetched), or any ``nn.Module`` whose
            ``print`` is a GPT-2 tree (e.g. transformers' ``GPT2LMHeadModel``).
        seq_len: T for shapes, activation memory and attention FLOPs; default the full context.
        batch: B for shapes and memory.
        from_repr: the text of ``print(model)`` instead (see ``explain_repr``).
    """
    if from_repr is not None:
        return explain_repr(from_repr, seq_len=seq_len, batch=batch)
    import torch

    from .model import GPT2

    if isinstance(model_or_config, GPT2Config):
        config, source = model_or_config, "config"
    elif isinstance(model_or_config, GPT2):
        config, source = model_or_config.config, "model"
        root, unknown = parse_repr(repr(model_or_config))
        ex = _build(root, unknown, source, batch, seq_len, config)
        real = model_or_config.num_parameters()
        if real != ex.params["total"]:
            ex.notes.append(f"this model holds {real:,} parameters, the config says {ex.params['total']:,}")
        return ex
    elif isinstance(model_or_config, torch.nn.Module):
        return explain_repr(repr(model_or_config), seq_len=seq_len, batch=batch, source=type(model_or_config).__name__)
    elif isinstance(model_or_config, (str, Path)):
        config, source = _config_from_name(str(model_or_config))
    else:
        raise ConfigError(f"cannot explain a {type(model_or_config).__name__}; pass a preset name, GPT2Config, GPT2 or path")
    return _build(_config_tree(config), [], source, batch, seq_len, config)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _render(ex: Explanation, markdown: bool) -> str:
    cfg, out = ex.config, []
    fl, mem = ex.flops, ex.memory
    B, T = ex.batch, ex.seq_len

    def heading(text: str) -> None:
        out.append(f"\n## {text}\n" if markdown else f"\n{text}\n{'=' * len(text)}")

    def table(rows: list[list[str]], header: list[str], align: str) -> None:
        if markdown:
            out.append("| " + " | ".join(header) + " |")
            out.append("|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|")
            for r in rows:
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
            out.append("")
            return
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for r in [header] + rows:
            out.append("  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip())

    title = f"GPT-2 explained: {ex.source}"
    out.append(f"# {title}" if markdown else f"{title}\n{'=' * len(title)}")
    out.append(f"{cfg.n_layer} layers, {cfg.n_head} head{'s' * (cfg.n_head > 1)} of {cfg.head_dim}, width {cfg.n_embd:,}, MLP {cfg.mlp_dim:,}, "
               f"vocabulary {cfg.vocab_size:,}, context {cfg.block_size:,}; shapes for batch B={B}, sequence T={T}.")
    if ex.notes:
        out.append("")
        out.extend(f"{'- ' if markdown else '  '}note: {n}" for n in ex.notes)
    if ex.unknown:
        out.append("")
        out.append("Lines not understood (not counted):")
        out.extend(f"{'- ' if markdown else '  '}{u}" for u in ex.unknown)

    heading("Module tree (parameters, output shape)")
    tree_rows = []
    for t in ex.tree:
        text = "  " * t.depth + t.text
        params = "" if t.params is None else f"{t.params:,}"
        shape = "" if t.output_shape is None else "(" + ", ".join(map(str, t.output_shape)) + ")"
        tree_rows.append([text, params, shape, t.note])
    width = max(len(r[0]) for r in tree_rows)
    pw = max(len(r[1]) for r in tree_rows)
    sw = max(len(r[2]) for r in tree_rows)
    if markdown:
        out.append("```text")
    for text, params, shape, note in tree_rows:
        out.append(f"{text.ljust(width)}  {params.rjust(pw)}  {shape.ljust(sw)}  {note}".rstrip())
    if markdown:
        out.append("```")

    heading("What each part does")
    for name, sentence in ex.components:
        out.append(f"- **{name}**: {sentence}" if markdown else f"- {name}: {sentence}")

    heading("Parameters, step by step")
    rows = []
    for s in ex.steps:
        if s.level == 0:
            rows.append([f"**{s.label}**" if markdown else s.label, "", ""])
        else:
            label = ("  " if s.level == 1 and not markdown else "") + s.label
            rows.append([label, s.formula, f"{s.value:,}"])
    table(rows, ["part", "arithmetic", "parameters"], "llr")

    heading("Memory")
    kv, tr, w = mem["kv_cache"], mem["training"], mem["weights"]
    table([
        ["weights fp32 / bf16 / int8", f"{ex.params['total']:,} x 4 / 2 / 1 bytes",
         f"{_bytes(w['fp32'])} / {_bytes(w['bf16'])} / {_bytes(w['int8'])}"],
        ["KV cache per token fp32 / bf16", f"2 x {cfg.n_layer} layers x {cfg.n_embd:,} = {kv['values_per_token']:,} values",
         f"{_bytes(kv['per_token_fp32'])} / {_bytes(kv['per_token_bf16'])}"],
        [f"KV cache, full context ({B} x {cfg.block_size:,} tokens) fp32 / bf16", "per token x B x block_size",
         f"{_bytes(kv['full_context_fp32'])} / {_bytes(kv['full_context_bf16'])}"],
        ["training: weights fp32", "4 bytes x N", _bytes(tr["weights_fp32"])],
        ["training: gradients fp32", "4 bytes x N", _bytes(tr["grads_fp32"])],
        ["training: AdamW moments", "2 x 4 bytes x N", _bytes(tr["adamw_fp32"])],
        [f"training: activations (B={B}, T={T})",
         f"B x T x ({cfg.n_layer} x 16 x {cfg.n_embd:,} + 2 x {cfg.n_embd:,} + 2 x {cfg.vocab_size:,}) x 4 bytes",
         _bytes(tr["activations_fp32"])],
        ["  + attention probabilities kept", f"+ B x T x {cfg.n_layer} x {cfg.n_head} x T x 4 bytes",
         _bytes(tr["activations_fp32_explicit_attention"] - tr["activations_fp32"])],
        ["training total (fp32, flash attention)", "weights + gradients + AdamW + activations", _bytes(tr["total_fp32"])],
    ], ["what", "arithmetic", "bytes"], "llr")
    out.append("Activations are an estimate: per token and block the inputs of ln_1, c_attn, c_proj, ln_2, c_fc, GELU and "
               "mlp.c_proj plus q, k, v (16 x n_embd values); dropout masks are left out.")

    heading(f"FLOPs per token (T={T})")
    table([
        ["weights used in matrix products (M)", f"{cfg.n_layer} x (4 x {cfg.n_embd:,}^2 + 2 x {cfg.n_embd:,} x {cfg.mlp_dim:,}) "
                                                f"+ {cfg.n_embd:,} x {cfg.vocab_size:,}", _fmt(fl["matmul_weights"])],
        ["dense", "2 x M", _flops(fl["dense_per_token"])],
        [f"attention over {T} positions", f"4 x {cfg.n_layer} x {cfg.n_embd:,} x {T}", _flops(fl["attention_per_token"])],
        ["forward (also: the next token after a context of T, KV cache)", "dense + attention", _flops(fl["forward_per_token"])],
        ["training (forward + backward)", "3 x forward = 6 M + 12 x L x C x T", _flops(fl["training_per_token"])],
        [f"training per step (B={B}, T={T})", "B x T x training per token", _flops(fl["training_per_token"] * T * B)],
    ], ["what", "arithmetic", "FLOPs"], "llr")
    out.append(f"Attention is {100 * fl['attention_per_token'] / fl['forward_per_token']:.1f}% of the forward FLOPs at T={T}. "
               "Counted: matrix products, 2 per multiply-add, each token charged all T positions (PaLM's convention, which MFU "
               "in training uses too; a causal kernel skips about half of the attention part). Left out: biases, LayerNorm, "
               "GELU, softmax and the embedding look-ups (a few operations per value). See gpt2lab.flops.")
    return "\n".join(out).lstrip("\n") + "\n"
