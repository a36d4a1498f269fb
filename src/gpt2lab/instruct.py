"""Instruction data: the prompt template, written once, and records turned into token ids and a loss mask.

GPT-2 was trained to continue text, so to make it follow instructions we show it many examples of
one fixed layout and train it to write only the part after ``### Response:``. The layout is the
Alpaca template (Taori et al. 2023; the one *Build a Large Language Model (From Scratch)*
uses in its chapter 7)::

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    Name the capital of France.

    ### Input:                     (only when the record has a non-empty "input")
    Answer in one word.

    ### Response:
    Paris.<|endoftext|>

A conversation of several turns repeats the last part: after each response's ``<|endoftext|>``
comes ``\\n\\n### Instruction:\\n`` with the next user message, then ``\\n\\n### Response:\\n``
and the next answer. The first paragraph is the *system* text: the Alpaca sentence above unless a
``messages`` record (or ``gpt2lab chat --system``) gives its own.

Which tokens teach: every token of a response and the ``<|endoftext|>`` after it (so the model
learns to stop) is a *target*; the template, the instruction and the input are context only
(their labels are -100, the value PyTorch's cross-entropy ignores). ``render`` returns both, ids
and mask, and is the one place that lays text out: ``prepare --format instruct`` writes what it
returns, and ``gpt2lab chat`` builds its prompt with it, so a chat shows the model exactly the
layout it was trained on, token for token.

Records (one JSON object per line of a ``.jsonl`` file, or a JSON list):

- Alpaca fields: ``{"instruction": ..., "input": ... (optional), "output": ...}``
- chat messages: ``{"messages": [{"role": "system", "content": ...} (optional, first),
  {"role": "user", ...}, {"role": "assistant", ...}, ...]}``: user and assistant alternate, and
  the last message is the assistant's (a conversation that ends with a question teaches nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import DataError

TEMPLATE = "alpaca-v1"  # recorded in meta.json: data prepared with another layout would not match chat's prompts
DEFAULT_SYSTEM = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
INSTRUCTION_HEADER = "\n\n### Instruction:\n"
INPUT_HEADER = "\n\n### Input:\n"
RESPONSE_HEADER = "\n\n### Response:\n"
ROLES = ("system", "user", "assistant")

# Where an answer ends when the model does not emit <|endoftext|> itself: at the next header it
# starts to write (a model still learning the template runs on into a new "### Instruction:").
# With and without the blank line before it, so that the blank line is cut too when it is there.
STOP_STRINGS = tuple(s for h in (INSTRUCTION_HEADER, RESPONSE_HEADER, INPUT_HEADER) for s in (h.rstrip("\n"), h.strip("\n")))


@dataclass
class Conversation:
    """A system text and its turns: (user message, assistant answer). The answer of the last turn
    may be ``None``: a prompt waiting for the model's answer."""

    system: str
    turns: list[tuple[str, str | None]]


def user_message(instruction: str, input: str | None = None) -> str:
    """An Alpaca instruction and its optional input as one user message (the input under its own header)."""
    return instruction + (INPUT_HEADER + input if input else "")


def render(tokenizer: Any, conversation: Conversation) -> tuple[list[int], list[int]]:
    """Token ids of a conversation laid out by the template, and the loss mask (1 = a target).

    Each turn is encoded as two pieces, the context (system text on the first turn, headers, the
    user message) and the answer, each with ``encode_ordinary`` (an ``<|endoftext|>`` written in a
    message is plain text, never the special token), then the answer's ``<|endoftext|>``. A chat
    prompt stops after the last context piece, right where training data has its answer.
    """
    ids: list[int] = []
    mask: list[int] = []
    for n, (user, answer) in enumerate(conversation.turns):
        if n == 0:
            context = conversation.system + INSTRUCTION_HEADER if conversation.system else INSTRUCTION_HEADER.lstrip("\n")
        else:
            context = INSTRUCTION_HEADER
        context_ids = tokenizer.encode_ordinary(context + user + RESPONSE_HEADER)
        ids += context_ids
        mask += [0] * len(context_ids)
        if answer is None:
            if n != len(conversation.turns) - 1:
                raise ValueError("only the last turn may wait for an answer")
            break
        answer_ids = tokenizer.encode_ordinary(answer) + [tokenizer.eot_token]
        ids += answer_ids
        mask += [1] * len(answer_ids)
    return ids, mask


def conversation_from_record(record: Any, where: str) -> Conversation:
    """Read one record (Alpaca fields or ``messages``) as a ``Conversation``.

    ``where`` names the record in error messages (``FILE:LINE``): a malformed record is a
    ``DataError`` that says which record and what is wrong with it.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with instruction/output fields or a messages list, got {type(record).__name__}")
    if "messages" in record:
        return _from_messages(record["messages"], where)
    if "instruction" not in record or "output" not in record:
        missing = " and ".join(repr(f) for f in ("instruction", "output") if f not in record)
        fields = ", ".join(map(str, record)) or "none"
        raise DataError(f"{where}: no {missing} field (it has {fields}); an instruction record has instruction, "
                        "input (optional) and output, or a messages list")
    instruction, input, output = record["instruction"], record.get("input"), record["output"]
    for name, value, optional in (("instruction", instruction, False), ("input", input, True), ("output", output, False)):
        if not isinstance(value, str) and not (optional and value is None):
            raise DataError(f"{where}: field {name!r} holds {type(value).__name__}, not text")
    if not instruction.strip():
        raise DataError(f"{where}: the instruction is empty")
    return Conversation(DEFAULT_SYSTEM, [(user_message(instruction, input), output)])


def _from_messages(messages: Any, where: str) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role': ..., 'content': ...}} objects")
    system = DEFAULT_SYSTEM
    turns: list[tuple[str, str | None]] = []
    expected = "user"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f"{where}: message {i} must be an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise DataError(f"{where}: message {i} has role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i} ({role}) holds {type(content).__name__}, not text")
        if role == "system":
            if i != 0:
                raise DataError(f"{where}: message {i} is a system message; only the first message may be one")
            system = content
            continue
        if role != expected:
            raise DataError(f"{where}: message {i} is from the {role} but the {expected} speaks next (user and assistant alternate)")
        if role == "user":
            turns.append((content, None))
        else:
            turns[-1] = (turns[-1][0], content)
        expected = "assistant" if role == "user" else "user"
    if not turns:
        raise DataError(f"{where}: the messages hold no user message")
    if expected == "assistant":
        raise DataError(f"{where}: the last message is the user's; a conversation to learn from ends with the assistant's answer")
    return Conversation(system, turns)


def prompt_ids(tokenizer: Any, system: str, history: Sequence[tuple[str, str]], message: str, room: int) -> tuple[list[int], int]:
    """The chat prompt for ``message`` after ``history``, dropping the oldest turns until it fits in ``room`` tokens.

    Returns the ids and how many of the oldest turns were left out. The system text stays (it
    opens the first turn that is kept); a message that does not fit even alone is an ``InputError``.
    """
    from .errors import InputError

    for dropped in range(len(history) + 1):
        ids, _ = render(tokenizer, Conversation(system, [*history[dropped:], (message, None)]))
        if len(ids) <= room:
            return ids, dropped
    raise InputError(f"the message is too long: with the template it takes {len(ids)} tokens, and the context has room "
                     f"for {room} before the answer; write a shorter one (or lower --max-new-tokens)")


__all__ = [
    "TEMPLATE", "DEFAULT_SYSTEM", "INSTRUCTION_HEADER", "INPUT_HEADER", "RESPONSE_HEADER", "STOP_STRINGS",
    "Conversation", "user_message", "render", "conversation_from_record", "prompt_ids",
]
