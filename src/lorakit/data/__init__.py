"""The data stage: records of any schema -> Conversation -> chat-template tokens with an assistant-only mask.

    load_conversations(paths, format, columns, system) -> list[Conversation]
    tokenize_conversation(tokenizer, conv, thinking=, train_on=, max_length=) -> {input_ids, labels, truncated}
    prepare_splits(data_config, tokenizer, cache_dir) -> PreparedData(train, eval, stats)

For notebooks (and `lorakit data ...`): validate(paths), inspect(paths, model), prepare(paths, model).
"""

from lorakit.data.conversation import Conversation, Message, Problem
from lorakit.data.load import load_conversations, scan
from lorakit.data.prepared import PreparedData, default_cache_dir, export_jsonl, prepare_splits
from lorakit.data.stage import inspect, prepare, validate
from lorakit.data.template import IGNORE, render_with_spans, tokenize_conversation

__all__ = [
    "validate",
    "inspect",
    "prepare",
    "Conversation",
    "Message",
    "Problem",
    "PreparedData",
    "IGNORE",
    "load_conversations",
    "scan",
    "tokenize_conversation",
    "render_with_spans",
    "prepare_splits",
    "default_cache_dir",
    "export_jsonl",
]
