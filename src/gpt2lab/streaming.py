"""Text as it is generated: stop strings and printable pieces, row by row.

A model emits token ids; a user reads text. Between them sit two facts of byte-level BPE: one
character can span several tokens (an emoji is often 2-3), and a stop string can span tokens or end
inside one. So the text of each row is kept as *bytes* (``RowText``): stop strings are found in the
bytes, and text is handed out only up to a complete UTF-8 character and never past the start of
what may still become a stop string. ``TextStream`` is the iterator ``generate_text(...,
stream=True)`` returns: it drives the decoding loop and yields each step's new text.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any

import torch


def token_bytes_fn(tokenizer: Any) -> Callable[[int], bytes]:
    """A function id -> the bytes of that token. Bytes, not text: one character can span tokens.

    Works with gpt2lab's ``Tokenizer`` and with tiktoken's ``Encoding``
    (``decode_single_token_bytes``), with anything that has ``decode_bytes``, and, last, with any
    tokenizer that has ``decode`` (whose text is then encoded back to UTF-8).
    """
    single = getattr(tokenizer, "decode_single_token_bytes", None)
    if callable(single):
        return single
    many = getattr(tokenizer, "decode_bytes", None)
    if callable(many):
        return lambda token: many([token])
    return lambda token: tokenizer.decode([token]).encode("utf-8")


class RowText:
    """The text one row has produced so far, fed one token at a time.

    It finds ``stop`` strings (in bytes, so a string spanning several tokens or ending inside one is
    found), cuts the text exactly before the stop string, and hands out text in pieces that never
    split a UTF-8 character and never show the start of what may turn out to be a stop string.
    Joining every piece gives ``tokenizer.decode(generated)`` cut before the first stop string.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = (), eos_token_id: int | None = None) -> None:
        self.token_bytes = token_bytes
        self.stops = [s.encode("utf-8") for s in stop]
        self.longest_stop = max((len(s) for s in self.stops), default=0)
        self.eos_token_id = eos_token_id
        self.buffer = bytearray()  # every byte generated so far (up to the cut, once stopped)
        self.released = 0  # bytes already handed to the UTF-8 decoder
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending: list[str] = []
        self.done = False
        self.stop_reason: str | None = None  # "eos", "stop" or None

    def feed(self, token: int) -> bool:
        """Add one generated token; returns True when this row must stop."""
        if self.done:
            return True
        if token == self.eos_token_id:
            self._finish("eos")
            return True
        start = max(0, len(self.buffer) - self.longest_stop + 1)  # a new match must end in the new bytes
        self.buffer += self.token_bytes(token)
        if self.stops:
            hits = [i for i in (self.buffer.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                del self.buffer[min(hits) :]  # cut exactly before the earliest stop string
                self._finish("stop")
                return True
        self._release(len(self.buffer) - self._held_back())
        return False

    def _held_back(self) -> int:
        """How many trailing bytes could be the beginning of a stop string (not shown yet)."""
        for n in range(min(self.longest_stop - 1, len(self.buffer)), 0, -1):
            tail = bytes(self.buffer[-n:])
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def _release(self, end: int, final: bool = False) -> None:
        if end > self.released or final:
            text = self.decoder.decode(bytes(self.buffer[self.released : end]), final=final)
            self.released = max(end, self.released)
            if text:
                self.pending.append(text)

    def _finish(self, reason: str | None) -> None:
        self.done = True
        self.stop_reason = reason
        self._release(len(self.buffer), final=True)

    def finish(self) -> None:
        """The row ran out of tokens (max_new_tokens): release everything held back."""
        if not self.done:
            self._finish(None)

    def take(self) -> str:
        """The text produced since the last call."""
        text = "".join(self.pending)
        self.pending.clear()
        return text

    @property
    def text(self) -> bytes:
        return bytes(self.buffer)


class TextStream:
    """The iterator ``generate_text(..., stream=True)`` returns: text pieces as they are produced
    (a ``str`` for one prompt, a list of ``str`` for a list of prompts). ``tokens`` counts the
    tokens generated so far (every row), ``stop_reasons`` says why each row ended ("eos", "stop",
    or None for max_new_tokens) once it has."""

    def __init__(self, steps: Iterator[torch.Tensor], rows: list[RowText], single: bool) -> None:
        self._steps, self.rows, self.single = steps, rows, single
        self.tokens = 0
        self._it = self._run()

    def _run(self) -> Generator[list[str], None, None]:
        alive = len(self.rows)
        for _ in self._steps:
            self.tokens += alive  # every row still going made a token this step
            alive = sum(not r.done for r in self.rows)
            pieces = [r.take() for r in self.rows]
            if any(pieces):
                yield pieces
        for r in self.rows:  # what was held back: a possible stop string that never completed, a split character
            r.finish()
        tail = [r.take() for r in self.rows]
        if any(tail):
            yield tail

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str | list[str]:
        pieces = next(self._it)
        return pieces[0] if self.single else pieces

    def close(self) -> None:
        """Stop generating (the model is put back in its training mode, if it was)."""
        self._it.close()
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()

    @property
    def stop_reasons(self) -> list[str | None]:
        return [r.stop_reason for r in self.rows]
