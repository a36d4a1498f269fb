"""Chat with a model in the instruction template: ``Chat`` for Python, ``run_chat`` for the terminal.

A turn is: the history and the new message laid out by ``instruct.render`` (the template the model
was fine-tuned on, token for token), then the model's answer streamed until it writes
``<|endoftext|>`` or starts a new ``### Instruction:`` of its own (``instruct.STOP_STRINGS``).
The answer joins the history, so the next message is read in context. The context is finite
(``block_size`` tokens, 1024 for GPT-2): room is kept for the answer (``max_new_tokens``, at most
half the context) and the oldest turns are dropped when the rest no longer fits.

    >>> chat = Chat(model, tokenizer, temperature=0)
    >>> chat.reply("Name the capital of France.")
    'Paris.'
    >>> for piece in chat.stream("And of Italy?"):   # the same, a piece at a time
    ...     print(piece, end="", flush=True)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, TextIO

import torch

from .errors import GenerationError, GPT2LabError
from .instruct import DEFAULT_SYSTEM, STOP_STRINGS, prompt_ids
from .model import GPT2
from .sampling import GenerationSettings
from .streaming import RowText, TextStream, token_bytes_fn

EXIT_WORDS = ("exit", "quit")


class Chat:
    """A conversation with ``model``: ``reply(message) -> str`` or ``stream(message)`` (text pieces).

    Args:
        model, tokenizer: a (fine-tuned) GPT-2 and its tokenizer.
        system: the paragraph that opens the prompt (default: the Alpaca sentence the template uses).
        max_new_tokens: the longest answer, in tokens.
        temperature, top_k, top_p: sampling, as in ``generate`` (``temperature=0``: greedy).
        seed: makes the answers reproducible (one generator for the whole conversation).

    ``history`` holds the (message, answer) pairs the model still sees; when the context is full the
    oldest leave it for good, and ``dropped`` says how many the last message pushed out.
    ``reset()`` starts over.
    """

    def __init__(
        self,
        model: GPT2,
        tokenizer: Any,
        *,
        system: str = DEFAULT_SYSTEM,
        max_new_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int | None = 50,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = GenerationSettings(temperature, top_k, top_p)  # a bad setting is an error now, not at the first message
        if max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model, self.tokenizer, self.system = model, tokenizer, system
        self.max_new_tokens = max_new_tokens
        self.generator = torch.Generator(device=model.device).manual_seed(seed) if seed is not None else None
        self.history: list[tuple[str, str]] = []
        self.dropped = 0

    @property
    def room(self) -> int:
        """Tokens the prompt may take: the context less what is kept free for the answer."""
        block_size = self.model.config.block_size
        return block_size - min(self.max_new_tokens, block_size // 2)

    def prompt(self, message: str) -> list[int]:
        """The token ids the model reads before answering ``message``; the oldest turns that no
        longer fit leave the history (an ``InputError`` when the message alone does not fit)."""
        ids, self.dropped = prompt_ids(self.tokenizer, self.system, self.history, message, self.room)
        del self.history[: self.dropped]
        return ids

    def stream(self, message: str) -> Iterator[str]:
        """The answer to ``message``, a piece of text at a time. A message too long for the context
        is an error here, before any answer. The answer joins the history when the iteration ends,
        also when it is stopped early (``close()``, Ctrl-C): what was shown is what the model said."""
        from .generate import generate

        ids = self.prompt(message)
        idx = torch.tensor([ids], dtype=torch.long, device=self.model.device)  # (1, T)
        eot = self.tokenizer.eot_token
        steps = generate(self.model, idx, self.max_new_tokens, temperature=self.settings.temperature, top_k=self.settings.top_k,
                         top_p=self.settings.top_p, eos_token_id=eot, generator=self.generator, stream=True)
        assert not isinstance(steps, torch.Tensor)  # stream=True: an iterator of (1, 1) steps
        row = RowText(token_bytes_fn(self.tokenizer), STOP_STRINGS, eot)
        return self._answer(message, TextStream(_until_done(steps, row), [row], single=True))

    def _answer(self, message: str, text: TextStream) -> Iterator[str]:
        pieces: list[str] = []
        try:
            for piece in text:
                assert isinstance(piece, str)  # one row: single pieces
                pieces.append(piece)
                yield piece
        finally:
            text.close()
            self.history.append((message, "".join(pieces).strip()))

    def reply(self, message: str) -> str:
        """The whole answer to ``message`` (surrounding whitespace removed), added to the history."""
        for _ in self.stream(message):
            pass
        return self.history[-1][1]

    def reset(self) -> None:
        """Forget the conversation (the system text stays)."""
        self.history.clear()
        self.dropped = 0


def _until_done(steps: Iterator[torch.Tensor], row: RowText) -> Iterator[torch.Tensor]:
    """Feed each new token (1, 1) to ``row`` and stop decoding as soon as the row is done (an
    ``<|endoftext|>`` or a stop string): ``TextStream`` reads the row's text, this drives it."""
    try:
        for new in steps:
            done = row.feed(int(new[0, 0]))
            yield new
            if done:
                break
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()


def run_chat(chat: Chat, *, stdin: TextIO | None = None, stdout: TextIO | None = None, interactive: bool | None = None) -> int:
    """The terminal chat: read a message, stream the answer, repeat. Returns the exit code (0).

    Interactive (stdin is a terminal): a ``you:`` prompt; Ctrl-C during an answer stops that
    answer and the chat goes on; Ctrl-C at the prompt twice in a row, Ctrl-D, ``exit`` or ``quit``
    leave. Otherwise (a pipe or a file) each line of stdin is a message and each answer is printed
    on its own, followed by a newline, with nothing else on stdout, so scripts can read them.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if interactive is None:
        interactive = stdin.isatty()
    if not interactive:
        for line in stdin:
            message = line.rstrip("\r\n")
            if not message.strip():
                continue
            if message.strip().lower() in EXIT_WORDS:
                break
            for piece in chat.stream(message):
                stdout.write(piece)
                stdout.flush()
            stdout.write("\n")
            stdout.flush()
        return 0

    try:
        import readline  # noqa: F401  (line editing and history for input(), where the platform has it)
    except ImportError:
        pass
    stdout.write("Chat with the model; Ctrl-C stops an answer, Ctrl-D or 'exit' leaves.\n")
    stdout.flush()
    interrupts = 0
    while True:
        try:
            message = input("you: ")
        except EOFError:
            stdout.write("\n")
            return 0
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts >= 2:
                stdout.write("\n")
                return 0
            stdout.write("\n(Ctrl-C again, Ctrl-D or 'exit' to leave)\n")
            stdout.flush()
            continue
        interrupts = 0
        if not message.strip():
            continue
        if message.strip().lower() in EXIT_WORDS:
            return 0
        try:
            answer = chat.stream(message)
        except GPT2LabError as err:  # a message too long for the context: say so, the chat goes on
            stdout.write(f"({err})\n")
            continue
        stdout.write("gpt2: ")
        stdout.flush()
        try:
            for piece in answer:
                stdout.write(piece)
                stdout.flush()
            stdout.write("\n")
        except KeyboardInterrupt:
            close = getattr(answer, "close", None)
            if close is not None:
                close()  # the answer so far joins the history
            stdout.write(" [stopped]\n")
        if chat.dropped:
            stdout.write(f"(the oldest {chat.dropped} turn{'s' if chat.dropped > 1 else ''} no longer fit the context and were left out)\n")
        stdout.flush()


__all__ = ["Chat", "run_chat", "EXIT_WORDS"]
