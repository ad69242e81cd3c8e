"""Tokenized samples kept as flat int32 arrays, not Python lists.

A Python list of ints costs ~36 bytes a token (pointer + int object); two of them per sample
(input_ids, labels) made a 200 MB JSONL peak at 3.6 GB. Here a token costs 8 bytes, samples are
appended as they are tokenized, and a sample becomes a dict of lists only when it is read.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lorakit.data.template import IGNORE


class SampleBuilder:
    """Collects samples one by one (growing int32 buffers) with their supervised count and truncation flag."""

    def __init__(self):
        self.ids, self.labels = array("i"), array("i")
        self.offsets = array("q", [0])
        self.supervised, self.truncated = array("q"), array("b")

    def __len__(self) -> int:
        return len(self.supervised)

    def add(self, sample: dict) -> None:
        self.ids.extend(sample["input_ids"])
        self.labels.extend(sample["labels"])
        self.offsets.append(len(self.ids))
        self.supervised.append(sum(1 for label in sample["labels"] if label != IGNORE))
        self.truncated.append(1 if sample.get("truncated") else 0)

    def build(self) -> "Samples":
        """Freeze into Samples sharing the buffers (no copy)."""
        return Samples(
            np.frombuffer(self.ids, dtype=np.int32) if self.ids else np.zeros(0, np.int32),
            np.frombuffer(self.labels, dtype=np.int32) if self.labels else np.zeros(0, np.int32),
            np.frombuffer(self.offsets, dtype=np.int64),
            np.frombuffer(self.supervised, dtype=np.int64) if self.supervised else np.zeros(0, np.int64),
            np.frombuffer(self.truncated, dtype=np.int8) if self.truncated else np.zeros(0, np.int8),
        )


class Samples(Sequence):
    """A read-only list of {"input_ids": [...], "labels": [...]} backed by flat arrays.

    `order` selects and orders samples of the shared arrays, so splitting, mixing and capping pick
    indices instead of copying tokens.
    """

    def __init__(self, ids, labels, offsets, supervised=None, truncated=None, order=None):
        self.ids, self.labels, self.offsets = ids, labels, offsets
        count = len(offsets) - 1
        self.supervised = supervised if supervised is not None else np.zeros(count, np.int64)
        self.truncated = truncated if truncated is not None else np.zeros(count, np.int8)
        self.order = np.arange(count, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k = int(self.order[i])
        a, b = int(self.offsets[k]), int(self.offsets[k + 1])
        return {"input_ids": self.ids[a:b].tolist(), "labels": self.labels[a:b].tolist()}

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(self) != len(other):
            return False
        return all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Samples({len(self)} samples, {self.token_count()} tokens)"

    def take(self, positions) -> "Samples":
        """The samples at these positions (of this view), sharing the arrays."""
        return Samples(
            self.ids,
            self.labels,
            self.offsets,
            self.supervised,
            self.truncated,
            self.order[np.asarray(positions, dtype=np.int64)] if len(positions) else np.zeros(0, np.int64),
        )

    def lengths(self) -> np.ndarray:
        return (self.offsets[self.order + 1] - self.offsets[self.order]) if len(self) else np.zeros(0, np.int64)

    def token_count(self) -> int:
        return int(self.lengths().sum())

    def save(self, folder: Path, name: str) -> None:
        """Write `{name}_input_ids.npy`, `_labels.npy` (flat int32) and `_offsets.npy` (int64, one more than
        samples)."""
        identity = len(self) == len(self.offsets) - 1 and np.array_equal(self.order, np.arange(len(self)))
        offsets = np.concatenate([[0], np.cumsum(self.lengths())]).astype(np.int64)
        for suffix, flat in (("input_ids", self.ids), ("labels", self.labels)):
            # one array at a time, so a gathered copy of one of them is the most held at once
            np.save(folder / f"{name}_{suffix}.npy", flat if identity else self._gather(flat, offsets))
        np.save(folder / f"{name}_offsets.npy", offsets)

    def _gather(self, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = np.empty(int(offsets[-1]), dtype=np.int32)
        for j, k in enumerate(self.order):
            out[offsets[j] : offsets[j + 1]] = flat[self.offsets[k] : self.offsets[k + 1]]
        return out

    @classmethod
    def load(cls, folder: Path, name: str) -> "Samples":
        return cls(
            np.load(folder / f"{name}_input_ids.npy"),
            np.load(folder / f"{name}_labels.npy"),
            np.load(folder / f"{name}_offsets.npy"),
        )
