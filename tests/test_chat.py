"""The chat: answers in the instruction template (equal to a plain greedy loop), stop strings,
history and the context limit, stopping early, and the command in a pseudo-terminal and a pipe."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2lab import GPT2, GPT2Config
from gpt2lab.chat import Chat
from gpt2lab.errors import InputError
from gpt2lab.instruct import DEFAULT_SYSTEM, STOP_STRINGS, Conversation, render

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(scope="module")
def model(gpt2_vocab_model_dir) -> GPT2:
    return GPT2.from_pretrained(gpt2_vocab_model_dir).eval()


def greedy_answer(model: GPT2, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    """The reference: the whole sequence through the model at every step (no cache), argmax,
    stop at <|endoftext|>, then cut the text at the first stop string."""
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids + new]))[0, -1].argmax())
            if token == tokenizer.eot_token:
                break
            new.append(token)
    text = tokenizer.decode(new)
    cuts = [i for i in (text.find(s) for s in STOP_STRINGS) if i >= 0]
    return text[: min(cuts)] if cuts else text


def test_greedy_reply_equals_a_plain_decoding_loop(model, tokenizer):
    chat = Chat(model, tokenizer, temperature=0, max_new_tokens=12)
    pieces = list(chat.stream("Name a colour."))
    prompt, _ = render(tokenizer, Conversation(DEFAULT_SYSTEM, [("Name a colour.", None)]))
    expected = greedy_answer(model, tokenizer, prompt, 12)
    assert "".join(pieces) == expected and len(pieces) > 1  # streamed, a piece at a time
    assert chat.history == [("Name a colour.", expected.strip())]
    # the next prompt is the conversation so far in the template, then the new message
    second, _ = render(tokenizer, Conversation(DEFAULT_SYSTEM, [("Name a colour.", expected.strip()), ("And another?", None)]))
    assert chat.prompt("And another?") == second
    assert chat.reply("And another?") == greedy_answer(model, tokenizer, second, 12).strip()


def test_an_answer_ends_at_end_of_text_or_a_new_instruction(model, tokenizer, monkeypatch):
    """What the model writes after its answer (a new "### Instruction:", or <|endoftext|>) is not
    shown, and decoding stops there rather than running to max_new_tokens."""
    import gpt2lab.generate

    consumed: list[int] = []

    def scripted(ids: list[int]):
        def steps(*args, **kwargs):
            for token in ids:
                consumed.append(token)
                yield torch.tensor([[token]])

        return steps

    chat = Chat(model, tokenizer, max_new_tokens=50)
    runs_on = tokenizer.encode_ordinary("Paris is the capital.\n\n### Instruction:\nAnd now") + [1, 2, 3]
    monkeypatch.setattr(gpt2lab.generate, "generate", scripted(runs_on))
    assert chat.reply("Capital of France?") == "Paris is the capital."
    assert len(consumed) < len(runs_on)
    consumed.clear()
    ends = tokenizer.encode_ordinary("Rome.") + [tokenizer.eot_token] + tokenizer.encode_ordinary(" more text")
    monkeypatch.setattr(gpt2lab.generate, "generate", scripted(ends))
    assert chat.reply("And of Italy?") == "Rome."
    assert consumed == ends[: ends.index(tokenizer.eot_token) + 1]
    assert chat.history == [("Capital of France?", "Paris is the capital."), ("And of Italy?", "Rome.")]


def test_the_oldest_turns_leave_when_the_context_is_full(tokenizer):
    torch.manual_seed(0)
    small = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=32, block_size=128)).eval()
    chat = Chat(small, tokenizer, system="Be brief.", temperature=0, max_new_tokens=8)
    assert chat.room == 128 - 8
    messages = [f"Message number {i}: tell me something about the number {i}." for i in range(8)]
    for message in messages:
        chat.reply(message)
        prompt = render(tokenizer, Conversation("Be brief.", [*chat.history[:-1], (message, None)]))[0]
        assert len(prompt) <= chat.room
    assert 1 <= len(chat.history) < len(messages)
    assert [m for m, _ in chat.history] == messages[-len(chat.history) :]  # the newest stay, in order
    kept = list(chat.history)
    with pytest.raises(InputError, match="the message is too long"):
        chat.reply("word " * 200)
    assert chat.history == kept  # a message that cannot fit changes nothing


def test_stopping_an_answer_keeps_what_was_shown(model, tokenizer):
    chat = Chat(model, tokenizer, max_new_tokens=200, seed=0)
    stream = chat.stream("Tell me a long story.")
    shown = [next(stream) for _ in range(3)]
    stream.close()  # what Ctrl-C does in the terminal
    assert chat.history == [("Tell me a long story.", "".join(shown).strip())]


def test_settings_are_checked_before_any_answer(model, tokenizer):
    from gpt2lab.errors import GenerationError

    with pytest.raises(GenerationError):
        Chat(model, tokenizer, temperature=-1)
    with pytest.raises(GenerationError, match="max_new_tokens"):
        Chat(model, tokenizer, max_new_tokens=0)


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


class Terminal:
    """``gpt2lab ARGS`` in a pseudo-terminal: what a user types goes in, what they see comes out."""

    def __init__(self, *args: object) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal, so Ctrl-C (\x03) is SIGINT
            os.execve(sys.executable, [sys.executable, "-m", "gpt2lab", *map(str, args)], ENV)
        self.pid, self.fd = pid, fd
        self.output = b""
        self.seen = 0  # how far read_until has matched

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child has gone
            return False
        self.output += data
        return bool(data)

    def read_until(self, pattern: bytes, timeout: float = 90) -> bytes:
        regex = re.compile(pattern, re.S)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output, self.seen)
            if match:
                self.seen = match.end()
                return match.group(0)
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"waited for {pattern!r}; the terminal shows:\n{self.output.decode(errors='replace')}")

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait_reading(self, timeout: float = 60) -> None:
        """Wait until the child sleeps in a read of its input (read, poll, select): a Ctrl-C sent while it
        is still on its way there is a signal that input() never sees (the race a user's hand cannot hit)."""
        waiting = {"0", "7", "23", "270", "271"}  # read, poll, select, pselect6, ppoll (x86-64 numbers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()[0]
                call = open(f"/proc/{self.pid}/syscall").read().split()[0]
            except OSError:  # no /proc (not Linux): fall back to a pause
                time.sleep(1.0)
                return
            if state == "S" and call in waiting:
                return
            self._read(0.05)
        raise AssertionError("the chat never sat waiting for input")

    def exit_code(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self._read(0.1)
        os.kill(self.pid, 9)
        raise AssertionError(f"the chat did not leave; the terminal shows:\n{self.output.decode(errors='replace')}")


def test_chat_in_a_terminal(gpt2_vocab_model_dir, gpt2_vocab_path):
    """Streamed answers; Ctrl-C during an answer stops it and the chat goes on; Ctrl-D leaves with 0."""
    term = Terminal("chat", "--model", gpt2_vocab_model_dir, "--tokenizer", gpt2_vocab_path, "--max-new-tokens", 3000, "--seed", 0, "--device", "cpu")
    term.read_until(rb"you: ")
    term.send(b"Tell me a story.\r")
    term.read_until(rb"gpt2: .{8}")  # the answer is coming, a piece at a time
    term.send(b"\x03")  # Ctrl-C
    term.read_until(rb"\[stopped\]")
    term.read_until(rb"you: ")
    term.send(b"And another one.\r")
    term.read_until(rb"gpt2: .{8}")  # the chat goes on
    term.send(b"\x03")
    term.read_until(rb"\[stopped\].*you: ")
    term.wait_reading()
    term.send(b"\x04")  # Ctrl-D at the prompt
    assert term.exit_code() == 0
    assert b"Traceback" not in term.output and b"KeyboardInterrupt" not in term.output


def test_two_ctrl_c_at_the_prompt_leave(gpt2_vocab_model_dir, gpt2_vocab_path):
    term = Terminal("chat", "--model", gpt2_vocab_model_dir, "--tokenizer", gpt2_vocab_path, "--device", "cpu")
    term.read_until(rb"you: ")
    term.wait_reading()
    term.send(b"\x03")
    term.read_until(rb"Ctrl-C again.*you: ")
    term.wait_reading()
    term.send(b"\x03")
    assert term.exit_code() == 0
    assert b"Traceback" not in term.output


def test_chat_reads_messages_from_a_pipe(model, gpt2_vocab_model_dir, tokenizer, gpt2_vocab_path):
    """Not a terminal: one message per line (blank lines skipped, "exit" ends), and stdout holds
    the answers alone, each followed by a newline; the same answers as the Python API gives."""
    run = subprocess.run(
        [sys.executable, "-m", "gpt2lab", "chat", "--model", str(gpt2_vocab_model_dir), "--tokenizer", str(gpt2_vocab_path),
         "--temperature", "0", "--max-new-tokens", "6", "--device", "cpu"],
        input="Name a colour.\n\nAnd another?\nexit\nnever read\n", capture_output=True, text=True, timeout=120, env=ENV,
    )
    assert run.returncode == 0, run.stderr
    chat = Chat(model, tokenizer, temperature=0, max_new_tokens=6)
    expected = "".join("".join(chat.stream(m)) + "\n" for m in ("Name a colour.", "And another?"))
    assert run.stdout == expected


def test_command_line_mistakes_are_one_line(gpt2_vocab_model_dir, gpt2_vocab_path):
    chat = [sys.executable, "-m", "gpt2lab", "chat", "--model", str(gpt2_vocab_model_dir), "--tokenizer", str(gpt2_vocab_path)]
    for args, message in (
        (["--temperature", "-1"], "temperature"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ):
        run = subprocess.run([*chat, *args], input="", capture_output=True, text=True, timeout=120, env=ENV)
        assert run.returncode == 2 and message in run.stderr and run.stderr.count("\n") == 1, run.stderr
    run = subprocess.run(chat, input="word " * 2000 + "\n", capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 2 and "the message is too long" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow  # trains a small model for 200 steps: about 25 s on two cores
def test_a_model_tuned_on_instruct_data_answers_in_the_chat(tmp_path):
    """The whole path: prepare --format instruct, train, then chat from a pipe: the answers are the
    responses it was taught, so prompt layout and training layout agree."""
    import json

    from gpt2lab.data import prepare
    from gpt2lab.instruct import INSTRUCTION_HEADER, RESPONSE_HEADER
    from gpt2lab.tokenizer import Tokenizer
    from gpt2lab.train import TrainConfig, train

    pairs = [("Name the capital of France.", "Paris."), ("What colour is the sky?", "Blue."), ("Say hello.", "Hello!"),
             ("Count to three.", "1, 2, 3")]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in pairs * 10))
    # a small vocabulary learnt from the template's own text keeps the model (and the run) small
    corpus = "".join(DEFAULT_SYSTEM + INSTRUCTION_HEADER + q + RESPONSE_HEADER + a + "\n" for q, a in pairs)
    Tokenizer.train(corpus, 600, progress=False).save(tmp_path / "tok")
    prepare(tmp_path / "sft.jsonl", tmp_path / "data", tokenizer=tmp_path / "tok", format="instruct", val_fraction=0.1, progress=False)
    train(TrainConfig(data=tmp_path / "data", out=tmp_path / "run", n_layer=2, n_head=2, n_embd=64, block_size=96, batch_size=8,
                      max_steps=200, lr=1e-2, warmup_steps=10, eval_every=0, checkpoint_every=0, progress=False, device="cpu", seed=0))
    run = subprocess.run([sys.executable, "-m", "gpt2lab", "chat", "--model", str(tmp_path / "run" / "model"), "--temperature", "0",
                          "--max-new-tokens", "10", "--device", "cpu"],
                         input="".join(q + "\n" for q, _ in pairs), capture_output=True, text=True, timeout=120, env=ENV)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [a for _, a in pairs]
