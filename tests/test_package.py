"""``import gpt2lab``: its names load on first use, the same whichever module is imported first, and the
command line's help and tokenizer start without torch. Each case runs in a fresh interpreter: this
one has long imported everything."""

from __future__ import annotations

import subprocess
import sys

import pytest


def fresh(code: str) -> str:
    """What ``code`` prints in a new interpreter (its last line)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_import_gpt2lab_does_not_import_torch_and_each_name_loads_on_first_use():
    assert fresh("import sys, gpt2lab; print('torch' in sys.modules, gpt2lab.__version__, gpt2lab.PRESETS['gpt2']['n_layer'])") \
        == "False 0.1.0 12"
    assert fresh("import sys, gpt2lab; m = gpt2lab.GPT2; print(m.__module__, 'torch' in sys.modules)") == "gpt2lab.model True"
    names = "GPT2 GPT2Config KVCache Tokenizer GenerationSettings generate_text attention AttentionResult explain Explanation trace " \
            "Trace prepare TrainConfig TrainResult"
    assert fresh(f"import gpt2lab; print(all(callable(getattr(gpt2lab, n)) for n in {names.split()!r}))") == "True"
    assert fresh("from gpt2lab import *; print(GPT2.__name__, attention.__name__, TrainConfig.__name__)") == "GPT2 attention TrainConfig"
    assert fresh("import gpt2lab; print(set(gpt2lab.__all__) <= set(dir(gpt2lab)))") == "True"


@pytest.mark.parametrize("first", ["import gpt2lab.attention", "from gpt2lab.explain import explain_repr",
                                   "import gpt2lab.trace as t", "from gpt2lab import interp", "import gpt2lab"])
def test_attention_explain_and_trace_are_the_functions_whatever_is_imported_first(first):
    check = "import gpt2lab, types; print([type(getattr(gpt2lab, n)).__name__ for n in ('attention', 'explain', 'trace')])"
    assert fresh(f"{first}\n{check}") == "['function', 'function', 'function']"
    assert fresh(f"{first}\nfrom gpt2lab.attention import AttentionResult; from gpt2lab import attention; "
                 "print(attention.__module__, AttentionResult.__module__)") == "gpt2lab.attention gpt2lab.attention"


def test_a_submodule_is_reached_as_an_attribute_and_a_missing_name_is_an_attribute_error():
    assert fresh("import gpt2lab; print(gpt2lab.lora.apply_lora.__name__, gpt2lab.interp.lens.__name__)") == "apply_lora lens"
    assert fresh("import gpt2lab\ntry:\n    gpt2lab.no_such_thing\nexcept AttributeError as e:\n    print(e)") \
        == "module 'gpt2lab' has no attribute 'no_such_thing'"
    assert fresh("import gpt2lab; print(hasattr(gpt2lab, 'no_such_thing'), hasattr(gpt2lab, 'GPT2'))") == "False True"


def test_help_and_the_tokenizer_command_run_without_torch(gpt2_vocab_path):
    code = ("import sys, contextlib, io\nfrom gpt2lab.cli import build_parser, main\nhelp = build_parser().format_help()\n"
            "out = io.StringIO()\nwith contextlib.redirect_stdout(out):\n"
            f"    main(['tokenizer', 'encode', 'hello world', '--tokenizer', {str(gpt2_vocab_path)!r}])\n"
            f"    main(['tokenizer', 'decode', '31373', '995', '--tokenizer', {str(gpt2_vocab_path)!r}])\n"
            "print('steer' in help, out.getvalue().count('31373'), 'torch' in sys.modules)")
    assert fresh(code) == "True 3 False"
