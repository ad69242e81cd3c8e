"""A GGUFWriter that packs the tokenizer's long arrays (150k token strings, types and merges) in one go.

The gguf package packs an array item by item through struct (about 2 s for Qwen's vocabulary on this
project's 2-core machine, most of an export of a small model). The bytes are the same: for a string array,
per item a little-endian u64 length and the UTF-8 text; for an int32 array, the values. Everything else
goes through the package's own packing. Only this module imports gguf at load: it is imported lazily.
"""

from __future__ import annotations

import struct

import gguf
import numpy as np

_FAST = (gguf.GGUFValueType.STRING, gguf.GGUFValueType.INT32)


class GGUFArrayWriter(gguf.GGUFWriter):
    def _pack_val(self, val, vtype, add_vtype: bool, sub_type=None) -> bytes:
        if vtype != gguf.GGUFValueType.ARRAY or sub_type not in _FAST or self.endianess != gguf.GGUFEndian.LITTLE:
            return super()._pack_val(val, vtype, add_vtype, sub_type)
        head = struct.pack("<I", vtype) if add_vtype else b""
        head += struct.pack("<IQ", sub_type, len(val))
        if sub_type == gguf.GGUFValueType.INT32:
            return head + np.asarray(val, dtype="<i4").tobytes()
        encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
        lengths = struct.pack(f"<{len(encoded)}Q", *map(len, encoded))
        return head + b"".join(lengths[8 * i : 8 * i + 8] + e for i, e in enumerate(encoded))


def add_string_array(writer, key: str, values) -> None:
    writer.add_key_value(key, list(values), gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING)


def add_int32_array(writer, key: str, values) -> None:
    writer.add_key_value(key, list(values), gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
