"""The tokenizer command: train a vocabulary, encode and decode for a quick look."""

from __future__ import annotations

import argparse
import sys

from .base import UsageError, command

# ---------------------------------------------------------------------------------------------
# tokenizer: train / encode / decode
# ---------------------------------------------------------------------------------------------


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    sub.required = True

    def vocab_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--tokenizer", metavar="PATH", help="a vocabulary (.tiktoken, vocab.json+merges.txt, tokenizer.json, "
                       "encoder.json+vocab.bpe) or a directory holding one (default: GPT-2's, see GPT2LAB_VOCAB)")
        q.add_argument("--backend", choices=("tiktoken", "python"), default=None, help="tiktoken (default, fast) or python (the reference); same ids")

    train = sub.add_parser("train", help="learn a byte-level BPE vocabulary from text files")
    train.add_argument("files", nargs="+", metavar="FILE", help="UTF-8 text files")
    train.add_argument("--vocab-size", type=int, required=True, help="tokens in all: 256 bytes + merges + special tokens")
    train.add_argument("--out", required=True, help="directory for vocab.json, merges.txt (Hugging Face) and tokenizer.tiktoken")
    train.add_argument("--special", action="append", metavar="TOKEN", help="a special token (repeatable; default <|endoftext|>)")
    train.set_defaults(_tokenizer_run=_tokenizer_train)

    encode = sub.add_parser("encode", help="text -> ids, showing token boundaries, ids and each token's bytes")
    encode.add_argument("text", nargs="?", help="the text (default: read standard input)")
    encode.add_argument("--text", dest="text_option", metavar="TEXT", help="the text, as the other commands take it")
    encode.add_argument("--special", action="store_true", help="encode <|endoftext|> as the special token (otherwise as text)")
    encode.add_argument("--ids", action="store_true", help="print only the ids, space separated")
    vocab_options(encode)
    encode.set_defaults(_tokenizer_run=_tokenizer_encode)

    decode = sub.add_parser("decode", help="ids -> text, showing each token's bytes")
    decode.add_argument("ids", nargs="*", metavar="ID", help="token ids, space or comma separated (default: read standard input)")
    decode.add_argument("--text", action="store_true", help="print only the decoded text")
    vocab_options(decode)
    decode.set_defaults(_tokenizer_run=_tokenizer_decode)


@command("tokenizer", "GPT-2's byte-level BPE: train a vocabulary, encode and decode for a quick look", _tokenizer_args)
def _tokenizer(args: argparse.Namespace) -> None:
    args._tokenizer_run(args)


def _load_tokenizer(args: argparse.Namespace):
    from ..tokenizer import Tokenizer

    return Tokenizer.gpt2(args.tokenizer, backend=args.backend)


def _show_tokens(tok, ids: list[int]) -> None:
    """Token boundaries on one line, then one row per token: position, id, bytes, text."""
    from ..tokens import visible

    pieces = tok.decode_tokens_bytes(ids)
    texts = [p.decode("utf-8", errors="replace") for p in pieces]
    print("|".join(visible(t).replace("|", "¦") for t in texts))  # the views' glyphs: ␣ space, ↵ newline
    print(f"{len(ids)} tokens, {sum(map(len, pieces))} bytes")
    width = max([len(str(i)) for i in ids] + [2])
    print(f"{'#':>5}  {'id':>{width}}  bytes")
    for n, (i, piece, text) in enumerate(zip(ids, pieces, texts)):
        note = "" if piece.decode("utf-8", errors="ignore") == text else "  (part of a character)"
        print(f"{n:>5}  {i:>{width}}  {piece!r}{note}")


def _tokenizer_train(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from ..tokenizer import ENDOFTEXT, Tokenizer

    files = [Path(f) for f in args.files]
    for f in files:
        if not f.is_file():
            raise UsageError(f"no such file: {f}")
    t0 = time.perf_counter()
    tok = Tokenizer.train(files, args.vocab_size, special_tokens=args.special or [ENDOFTEXT], name=Path(args.out).name)
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in files) / 1e6
    written = tok.save(args.out) + tok.save(Path(args.out) / "tokenizer.tiktoken")
    print(f"learned {len(tok.merges)} merges from {size:.2f} MB in {seconds:.1f} s: n_vocab {tok.n_vocab}, "
          f"special tokens {', '.join(f'{t}={i}' for t, i in tok.special_tokens.items()) or 'none'}")
    for path in written:
        print(f"  {path}")


def _tokenizer_encode(args: argparse.Namespace) -> None:
    if args.text is not None and args.text_option is not None:
        raise UsageError("give the text once: as an argument or with --text, not both")
    text = args.text_option if args.text_option is not None else args.text
    if text is None:
        text = sys.stdin.read()
    tok = _load_tokenizer(args)
    ids = tok.encode(text, allowed_special="all") if args.special else tok.encode(text, disallowed_special=())
    if args.ids:
        print(" ".join(map(str, ids)))
        return
    _show_tokens(tok, ids)
    print("ids:", " ".join(map(str, ids)))


def _tokenizer_decode(args: argparse.Namespace) -> None:
    raw = " ".join(args.ids) if args.ids else sys.stdin.read()
    words = raw.replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        ids = [int(w) for w in words]
    except ValueError:
        raise UsageError(f"token ids must be integers, got {raw.strip()[:60]!r}") from None
    tok = _load_tokenizer(args)
    text = tok.decode(ids)
    if args.text:
        sys.stdout.write(text + "\n")
        return
    _show_tokens(tok, ids)
    print("text:", repr(text))
