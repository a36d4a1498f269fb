"""Reading the text ``print(model)`` shows: a module tree, then the GPT-2 it describes.

    >>> root, unknown = parse_repr(text)     # the tree, and the (line, text) it could not read
    >>> reading = read_tree(root, unknown)   # the GPT2Config it shows, with notes on what was assumed

It reads a Hugging Face ``GPT2LMHeadModel`` or ``GPT2Model`` (any transformers version: Conv1D with or
without shapes, folded ``(0-11): 12 x GPT2Block(`` lists) and gpt2lab's own ``GPT2``, with or without
indentation (pasted text often loses it): nesting comes from the parentheses. What it cannot read is
reported by line, never guessed. ``explain.explain_repr`` builds the explanation on top of this.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import GPT2Config
from .errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Parsing print(model)
# ---------------------------------------------------------------------------------------------


@dataclass
class ReprNode:
    """One module of a printed tree: ``(key): [N x ]Cls(args)`` or a container with children."""

    key: str | None  # "wte", "0-11", "0"; None for the root
    cls: str  # "Embedding", "GPT2Block", ...
    args: str | None  # the text inside a leaf's parentheses; None for a container
    children: list[ReprNode] = field(default_factory=list)
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
    args = node.args
    if args is None:  # a container
        return None
    if node.cls == "Linear":
        named = (_kwarg(args, "in_features"), _kwarg(args, "out_features"))
        # "Linear(in_features=768, out_features=2304, bias=True)", or the widths by position
        widths: list[int | None] = [int(x) for x in named if x] if all(named) else [*_ints(args), None, None][:2]
        return _Linear("Linear", widths[0] or None, widths[1] or None, _kwarg(args, "bias") != "False")
    if node.cls == "Conv1D":
        nf, nx = _kwarg(args, "nf"), _kwarg(args, "nx")  # transformers >= 4.4x prints these
        return _Linear("Conv1D", int(nx) if nx else None, int(nf) if nf else None, True)  # HF's Conv1D always has a bias
    return None


def _children(node: ReprNode) -> dict[str | None, ReprNode]:
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
        self.linear_kind = "Linear"  # "Conv1D" once a Conv1D is seen (a Hugging Face tree)

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
        nums = _ints((node.args or "").split("eps")[0])
        if nums and nums[0] != C:
            self.problems.append(f"line {node.line}: LayerNorm is {nums[0]} wide, the stream is {C}")

    def projection(self, node: ReprNode, role: str) -> bool:
        """Take ``node`` as the Linear or Conv1D of ``role`` (its widths are checked at the end); False if it is neither."""
        lin = _read_linear(node)
        if lin is None:
            return False
        node.role = role
        self.linears.setdefault(role, []).append((node, lin))
        return True

    def block(self, block: ReprNode, C: int) -> None:
        block.role = "block"
        kids = _children(block)
        for c in block.children:
            if c.key in ("ln_1", "ln_2"):
                self.layer_norm(c, f"block.{c.key}", C)
            elif c.key == "attn" and c.is_container:
                c.role = "block.attn"
                for a in c.children:
                    if a.key in ("attn_dropout", "resid_dropout") and a.cls == "Dropout":
                        self.dropout(a, a.key)
                    elif not (a.key in ("c_attn", "c_proj") and self.projection(a, f"block.attn.{a.key}")):
                        self.report(a)
            elif c.key == "mlp" and c.is_container:
                c.role = "block.mlp"
                for a in c.children:
                    if a.key == "act" and not a.is_container and (a.cls in _GELU_TANH | _GELU_EXACT or a.cls == "GELU"):
                        a.role = "block.mlp.act"
                        tanh = a.cls in _GELU_TANH or "tanh" in (a.args or "")
                        self.activations.add("gelu_tanh" if tanh else "gelu")
                    elif a.key == "dropout" and a.cls == "Dropout":
                        self.dropout(a, "dropout")
                    elif not (a.key in ("c_fc", "c_proj") and self.projection(a, f"block.mlp.{a.key}")):
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


@dataclass
class TreeReading:
    """What a printed tree says about the model it shows, and what reading it took."""

    config: GPT2Config  # the config the printed shapes describe
    has_lm_head: bool  # False for a GPT2Model printed without the language-model head
    linear_kind: str  # "Linear" (gpt2lab, nn.Linear) or "Conv1D" (Hugging Face)
    notes: list[str]  # assumptions made: shapes inferred, heads assumed, tying assumed
    problems: list[str]  # printed shapes that do not fit a GPT-2, counted as GPT-2's
    unknown: list[str]  # "line N: text" of what was not understood, never guessed


def read_tree(root: ReprNode, unknown_lines: Sequence[tuple[int, str]] = ()) -> TreeReading:
    """The GPT-2 a parsed tree describes. Every node it understands gets its ``role`` set in place
    ("wte", "block.attn.c_attn", ...); ``unknown_lines`` are the parser's (line, text) leftovers.
    Raises ``ConfigError`` where the tree is not a GPT-2 (no wte, wpe or h; shapes that disagree)."""
    interpreter = _Interpreter(root, list(unknown_lines))
    config, has_head = interpreter.run()
    return TreeReading(config, has_head, interpreter.linear_kind, interpreter.notes, interpreter.problems, interpreter.unknown)
