"""The tokenizer inside a GGUF file: tokens, token types, BPE merges, special ids and the chat template.

llama.cpp and Ollama tokenize and stop from these keys alone, so a wrong type or a missing end-of-turn id
is what makes an exported fine-tune run past its answer. Read from the model folder's tokenizer.json
(byte-level BPE only) and written with the gguf package's key helpers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.errors import LorakitError

# The split regexes of the byte-level BPE families we export, as llama.cpp names them ("pre" key).
# Qwen2/Qwen3 and Llama 3 differ only in how many digits form one piece.
_QWEN2_DIGITS = r"\p{N}| ?[^\s\p{L}\p{N}]+"
_LLAMA3_DIGITS = r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>")


@dataclass
class GGUFVocab:
    tokens: list[str]
    types: list[int]  # gguf.TokenType values
    merges: list[str]  # "left right"
    pre: str  # llama.cpp's pre-tokenizer name
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, eot, pad, unk
    add_bos: bool = False
    chat_template: str | None = None

    def stop_tokens(self) -> list[str]:
        """Texts of the tokens that end a turn (eos and eot), for the Modelfile's PARAMETER stop."""
        ids = [self.special_ids[k] for k in ("eot", "eos") if k in self.special_ids]
        return list(dict.fromkeys(self.tokens[i] for i in ids))


def read_vocab(model_dir: Path, n_vocab: int) -> GGUFVocab:
    """Build the GGUF tokenizer of a model folder; `n_vocab` is the embedding rows (padding fills the gap)."""
    import gguf
    from transformers import AutoTokenizer

    spec = _tokenizer_json(model_dir)
    model = spec.get("model", {})
    if (
        model.get("type") != "BPE"
        or model.get("byte_fallback")
        or (spec.get("decoder") or {}).get("type") != "ByteLevel"
    ):
        raise LorakitError(f"{model_dir}: only byte-level BPE tokenizers (Qwen, Llama 3, SmolLM2) can be exported "
                           "to GGUF yet")  # fmt: skip
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    if max(by_id) >= n_vocab:
        raise LorakitError(f"{model_dir}: tokenizer has id {max(by_id)} but the embedding has only {n_vocab} rows")
    tokens, types = [], []
    for i in range(n_vocab):  # rows past the tokenizer exist for alignment; llama.cpp calls them unused
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = _special_ids(tok, model_dir, tokens)
    add_bos = tok.bos_token_id is not None and tok("a").input_ids[:1] == [tok.bos_token_id]
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    return GGUFVocab(tokens, types, merges, _pre_tokenizer(spec, model_dir), ids, add_bos, template)


def write_vocab(writer, vocab: GGUFVocab) -> None:
    import gguf

    from lorakit.exporting.gguf_arrays import add_int32_array, add_string_array

    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    # typed arrays: the GGUFArrayWriter packs them in one go (the keys add_token_list/types/merges use)
    add_string_array(writer, gguf.Keys.Tokenizer.LIST, vocab.tokens)
    add_int32_array(writer, gguf.Keys.Tokenizer.TOKEN_TYPE, vocab.types)
    if vocab.merges:
        add_string_array(writer, gguf.Keys.Tokenizer.MERGES, vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "eot": writer.add_eot_token_id,
              "pad": writer.add_pad_token_id, "unk": writer.add_unk_token_id}  # fmt: skip
    for kind, token_id in vocab.special_ids.items():
        adders[kind](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def _special_ids(tok, model_dir: Path, tokens: list[str]) -> dict[str, int]:
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id, "unk": tok.unk_token_id}
    if ids["pad"] is None:  # same fallback as lorakit's loader: pad with eos
        ids["pad"] = _config_value(model_dir, "pad_token_id") or ids["eos"]
    # End of turn: the chat format's closing token, which is what a chat must stop on even when the
    # tokenizer's eos is the document end (<|endoftext|>).
    eot = next((t for t in END_OF_TURN_TOKENS if t in tokens), None)
    if eot is not None:
        ids["eot"] = tokens.index(eot)
    return {k: int(v) for k, v in ids.items() if isinstance(v, int)}


def _pre_tokenizer(spec: dict, model_dir: Path) -> str:
    """llama.cpp's name for the tokenizer's split rule; an unknown rule is refused, not guessed."""
    regex = spec.get("pre_tokenizer") or {}
    patterns = _regexes(regex)
    if any(_QWEN2_DIGITS in p for p in patterns):
        return "qwen2"
    if any(_LLAMA3_DIGITS in p for p in patterns):
        return "llama-bpe"
    if _is_plain_byte_level(regex):  # GPT-2's split regex, as SmolLM2 uses it
        return "smollm"
    raise LorakitError(f"{model_dir}: tokenizer's pre-tokenizer is not one lorakit can name for llama.cpp "
                       "(known: Qwen2/3, Llama 3, SmolLM2)")  # fmt: skip


def _regexes(node) -> list[str]:
    if isinstance(node, dict):
        found = (
            [node["pattern"]["Regex"]] if isinstance(node.get("pattern"), dict) and "Regex" in node["pattern"] else []
        )
        for value in node.values():
            found += _regexes(value)
        return found
    if isinstance(node, list):
        return [r for item in node for r in _regexes(item)]
    return []


def _is_plain_byte_level(node: dict) -> bool:
    return node.get("type") == "ByteLevel" and node.get("use_regex", True)


def _tokenizer_json(model_dir: Path) -> dict:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise LorakitError(f"{model_dir}: no tokenizer.json; GGUF export needs the fast tokenizer file")
    return json.loads(path.read_text(encoding="utf-8"))


def _config_value(model_dir: Path, key: str):
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get(key)
    except (OSError, json.JSONDecodeError):
        return None
