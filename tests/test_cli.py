"""What every ``gpt2lab`` command shares (``gpt2lab.cli.base``): the registry behind ``--help``, and how
``--model`` and ``--tokenizer`` load."""

from __future__ import annotations

import re

import pytest

from gpt2lab.cli import COMMANDS, build_parser, main

# each command that loads a model and its tokenizer, with the other options it needs
LOADING = {
    "generate": ["--prompt", "hi", "--max-new-tokens", "1"],
    "chat": [],
    "attention": ["--text", "hi", "--out", "{out}"],
    "lens": ["--text", "hi", "--out", "{out}"],
    "answer": ["--prompt", "hi", "--answer", " there"],
    "patch": ["--clean", "a b", "--corrupt", "a c", "--answer", " b", "--wrong", " c", "--out", "{out}"],
    "attribute": ["--text", "hi", "--answer", " b", "--out", "{out}"],
    "steer": ["--prompt", "hi", "--plus", "Love"],
}


def one_line_error(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_every_command_is_listed_in_the_journeys_order_and_has_its_own_help(capsys):
    listed = build_parser().format_help()
    order = [m[1] for m in re.finditer(r"^    (\w+)\b", listed, re.M)]  # the command column, top to bottom
    assert sorted(order) == sorted(COMMANDS) and len(order) == 18
    assert order[:3] == ["demo", "generate", "chat"] and order.index("train") < order.index("lens") < order.index("experiment")
    for name, (help_text, _, _) in COMMANDS.items():
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
        assert shown.startswith(f"usage: gpt2lab {name} ") and " ".join(help_text.split()) in shown


def test_version_prints_the_packages_version(capsys):
    from gpt2lab import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"gpt2lab {__version__}\n"
    assert "--version" in build_parser().format_help()


@pytest.mark.parametrize("name", sorted(LOADING))
def test_a_tokenizer_larger_than_the_model_is_one_line_exit_2(name, hf_tiny, gpt2_vocab_path, tmp_path, capsys):
    _, model_dir = hf_tiny  # 1,000 tokens; GPT-2's vocabulary has 50,257
    extra = [a.replace("{out}", str(tmp_path / "out")) for a in LOADING[name]]
    code = main([name, "--model", str(model_dir), "--tokenizer", str(gpt2_vocab_path), *extra])
    assert code == 2
    assert one_line_error(capsys) == (f"gpt2lab {name}: error: vocabulary mismatch: the tokenizer has 50,257 tokens, "
                                      "the model 1,000; pass the model's --tokenizer")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", sorted(LOADING))
def test_a_wrong_tokenizer_path_is_reported_before_any_weights_are_read(name, tmp_path, capsys):
    extra = [a.replace("{out}", str(tmp_path / "out")) for a in LOADING[name]]
    missing = tmp_path / "no_such_vocab.tiktoken"
    code = main([name, "--model", str(tmp_path / "no_such_model"), "--tokenizer", str(missing), *extra])
    line = one_line_error(capsys)
    assert code == 2 and line.startswith(f"gpt2lab {name}: error: ") and str(missing) in line and "no_such_model" not in line
