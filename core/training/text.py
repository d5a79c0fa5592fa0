"""Text for a tiny character-level GPT: the corpus, its alphabet, fixed splits, batches, and
the text tasks' transforms (the text's counterpart of data.py's image shifts; the shifts
themselves, their parameters and checks, are core.training.data.SHIFTS).

Nothing is downloaded. The pretraining text is English prose that ships with every CPython: the
documentation topics of `pydoc_data.topics` (79 topics, about 465 kB on Python 3.11), joined in
sorted key order. The second domain is Python source: a fixed, sorted list of pure-Python
standard-library modules of about the same size, read from their files. Both change a little
between Python releases, so a model card names the text by its fingerprint (TextDataset.
fingerprint) as well as by name.

The text is cut into contiguous chunks of CHUNK_LENGTH characters; a seed shuffles the chunks
into train, validation and test, so the split is the same on every machine (numpy's PCG64 is).
A training window never crosses a chunk's end, so no window reads across a cut.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

# ---------------------------------------------------------------------------------- alphabet ---

ALPHABET = "\n" + "".join(chr(code) for code in range(0x20, 0x7F))
"""The characters the model knows: newline and printable ASCII (space to '~'), 96 in all. Index i
is ALPHABET[i]. Tabs, curly quotes, accented letters and every other character share one index,
UNKNOWN: the prose has a few hundred of them (’ “ ” — …), the chosen source files almost none."""

UNKNOWN = len(ALPHABET)
"""The one index of every character outside ALPHABET."""

UNKNOWN_SYMBOL = "\ufffd"
"""How an UNKNOWN index is written back (decode): the replacement character �."""

VOCAB_SIZE = len(ALPHABET) + 1  # the alphabet and UNKNOWN: the model's input and output size

_SYMBOLS = ALPHABET + UNKNOWN_SYMBOL
_KNOWN = frozenset(ALPHABET)
_INDEX = np.full(0x80, UNKNOWN, dtype=np.int64)  # code point (< 128) → index
_INDEX[[ord(character) for character in ALPHABET]] = np.arange(len(ALPHABET))


def encode(text: str) -> Tensor:
    """The text as int64 indices into ALPHABET, UNKNOWN for any other character.

    Vectorised over code points (UTF-32), since the corpus is half a million characters."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    indices = np.where(codes < 0x80, _INDEX[np.minimum(codes, 0x7F)], UNKNOWN)
    return torch.from_numpy(indices.astype(np.int64))


def decode(indices: Tensor | list[int]) -> str:
    """Indices back to text; UNKNOWN becomes UNKNOWN_SYMBOL (so decode(encode(s)) == s exactly
    when every character of s is in ALPHABET)."""
    values = indices.tolist() if isinstance(indices, Tensor) else indices
    return "".join(_SYMBOLS[index] for index in values)


def unknown_characters(prompt: str) -> list[str]:
    """The distinct characters of a user's prompt that the model does not know, in the order
    they first appear: a page says them plainly instead of silently reading them as UNKNOWN."""
    return list(dict.fromkeys(character for character in prompt if character not in _KNOWN))


# ---------------------------------------------------------------------------------- corpus ---

PROSE_MODULE = "pydoc_data.topics"

STDLIB_MODULES = (
    "argparse",
    "calendar",
    "configparser",
    "dataclasses",
    "difflib",
    "enum",
    "pprint",
    "random",
    "textwrap",
)
"""The modules whose source is the second domain: pure Python, one file each in every CPython
from 3.8 to 3.13 (pathlib, for one, became a package in 3.13 and is left out), about 477 kB
together on Python 3.11, the size of the prose. Sorted: the text is the same on every machine."""


def prose() -> str:
    """The pretraining text: every pydoc topic, in sorted key order (a one-line ValueError
    naming the missing module if this Python was built without it)."""
    try:
        topics = importlib.import_module(PROSE_MODULE).topics
    except ImportError:
        raise ValueError(_missing(f"the module {PROSE_MODULE}")) from None
    return "".join(topics[key] for key in sorted(topics))


def code() -> str:
    """The second domain: the source of STDLIB_MODULES, in that order, one after another.

    Found through the import system's spec (its origin is the module's __file__) without
    running the module. A build that ships only bytecode has no source: a one-line ValueError
    names the first module whose .py file is missing."""
    return "\n".join(_source(name) for name in STDLIB_MODULES)


def _source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    if origin is None or not origin.endswith(".py") or not Path(origin).is_file():
        raise ValueError(_missing(f"the source file of the module {module} ({origin})"))
    return Path(origin).read_text(encoding="utf-8")


def _missing(what: str) -> str:
    """One line for a student or teacher: what is missing, and what brings it back."""
    return (
        f"The text for the language model is missing: this Python has no {what}. "
        "Use a full CPython build (python.org, pyenv or a distribution's complete python3 "
        "package), which ships it; nothing is downloaded."
    )


# ---------------------------------------------------------------------------------- splits ---

SPLIT_SEED = 20240607
"""Seed of the text's train/val/test split (as data.SPLIT_SEED for images): fixed, since a
pretrained model's held-out text must stay held out."""

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Train, validation and test share of the chunks."""

CHUNK_LENGTH = 1024
"""Characters in one chunk, the unit of the split; a context may be at most CHUNK_LENGTH - 1."""

SplitName = Literal["train", "val", "test"]


def chunk_split(
    n_chunks: int, fractions: tuple[float, float, float] = SPLIT_FRACTIONS, seed: int = SPLIT_SEED
) -> dict[SplitName, np.ndarray]:
    """Which chunks each split holds: a seeded shuffle of 0 … n_chunks - 1, cut into validation,
    test and train (the rest), each in reading order.

    Whole chunks rather than single windows: a held-out window then shares no characters with
    any training window, and the split is a few hundred numbers that a test can pin."""
    order = np.random.default_rng(seed).permutation(n_chunks)
    n_val, n_test = round(n_chunks * fractions[1]), round(n_chunks * fractions[2])
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test]}
    parts["train"] = order[n_val + n_test :]
    return {name: np.sort(parts[name]) for name in ("train", "val", "test")}


@dataclass(frozen=True)
class TextDataset:
    """A text and its fixed split into chunks. The characters after the last whole chunk
    (fewer than chunk_length) belong to no split."""

    name: str  # "prose", "code", or the task that made it ("substitute", "reverse-words")
    text: str
    chunk_length: int = CHUNK_LENGTH
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    seed: int = SPLIT_SEED

    @property
    def n_chunks(self) -> int:
        return len(self.text) // self.chunk_length

    @property
    def sizes(self) -> dict[SplitName, int]:
        """Characters in each split, as a model card states them."""
        chunks = chunk_split(self.n_chunks, self.fractions, self.seed)
        return {name: len(part) * self.chunk_length for name, part in chunks.items()}

    @property
    def fingerprint(self) -> str:
        """The first 16 hex digits of the text's sha256: which text a model card's numbers are
        on, since pydoc's topics and the stdlib's source change between Python releases."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def split(self, name: SplitName) -> Tensor:
        """The split's chunks, encoded: int64 (chunks, chunk_length), in reading order."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split '{name}'; choose train, val or test")
        usable = self.n_chunks * self.chunk_length
        chunks = encode(self.text[:usable]).view(self.n_chunks, self.chunk_length)
        indices = chunk_split(self.n_chunks, self.fractions, self.seed)[name]
        return chunks[torch.from_numpy(indices)]


def batch(
    chunks: Tensor, batch_size: int, context: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """`batch_size` random windows of `context` characters from a split's chunks, and the
    character after each position: x, y int64 (batch_size, context), y[:, t] = x[:, t + 1]
    within the text. The generator alone decides which windows (same seed, same batch)."""
    length = chunks.shape[1]
    if not 1 <= context < length:
        raise ValueError(f"context must be between 1 and {length - 1} characters, got {context}")
    rows = torch.randint(len(chunks), (batch_size, 1), generator=generator)
    starts = torch.randint(length - context, (batch_size, 1), generator=generator)
    positions = starts + torch.arange(context)
    return chunks[rows, positions], chunks[rows, positions + 1]


def windows(chunks: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Every whole, non-overlapping window of `context` characters of every chunk, in reading
    order: the held-out loss is their mean, the same number on every run (no randomness)."""
    length = chunks.shape[1]
    if not 1 <= context < length:
        raise ValueError(f"context must be between 1 and {length - 1} characters, got {context}")
    n = (length - 1) // context  # windows per chunk whose last target is still in the chunk
    x = chunks[:, : n * context].reshape(-1, context)
    y = chunks[:, 1 : n * context + 1].reshape(-1, context)
    return x, y


# ---------------------------------------------------------------------------------- metric ---


def bits_per_character(loss: float) -> float:
    """A mean cross-entropy in nats per character, in bits: loss / ln 2. Uniform guessing over
    VOCAB_SIZE characters is log2(97) ≈ 6.6 bits."""
    return loss / math.log(2)


def next_character_accuracy(logits: Tensor, y: Tensor) -> float:
    """The share of positions whose most likely next character is the true one."""
    return (logits.argmax(-1) == y).float().mean().item()


# ---------------------------------------------------------------------------------- shifts ---


def letter_permutation(seed: int) -> str:
    """A seeded order of the 26 lowercase letters in which no letter stays (a derangement, as
    data.class_permutation for classes): letter i becomes the i-th letter of the result."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(26)
        if not np.any(order == np.arange(26)):
            return "".join(chr(ord("a") + i) for i in order)


def substitute(text: str, seed: int) -> str:
    """Every ASCII letter replaced by letter_permutation(seed)'s, upper case as lower case
    (a → q and A → Q alike); every other character stays."""
    lower = "abcdefghijklmnopqrstuvwxyz"
    image = letter_permutation(seed)
    return text.translate(str.maketrans(lower + lower.upper(), image + image.upper()))


def _is_letter(character: str) -> bool:
    return "a" <= character <= "z" or "A" <= character <= "Z"


def reverse_words(text: str) -> str:
    """Each word's letters in reverse order ("Hello, world" → "olleH, dlrow"); a word is a run
    of ASCII letters, so whitespace, digits and punctuation stay where they are, and the text
    keeps its length (its chunks are the same passages as the prose's)."""
    runs = itertools.groupby(text, key=_is_letter)
    return "".join("".join(run)[::-1] if letters else "".join(run) for letters, run in runs)


def shifted(text: str, shift: str, params: dict[str, Any]) -> str:
    """`text` as the shift changes it (substitute, reverse-words), for the task and for a
    preview of the same passage before and after. "none" and "code" leave it as it is ("code"
    changes which text, not how it is written)."""
    if shift == "substitute":
        return substitute(text, int(params["seed"]))
    if shift == "reverse-words":
        return reverse_words(text)
    return text


DEFAULT_PROMPT = "The "
"""What the model is asked to continue while it trains (the start of an English sentence)."""
PROMPTS = {"code": "def "}  # a task whose target text starts otherwise: its own prompt
SAMPLE_SEED = 0  # every sample of every run draws from this seed: same weights, same text
SAMPLE_LENGTH = 80  # characters written after the prompt: a line and a half
SAMPLE_TEMPERATURE = 0.8  # below 1: likelier characters, a sample that reads better
PROMPT_LIMIT = 100  # characters a student's own prompt may have: no model reads more than 128


def prompt_for(shift: str, params: dict[str, Any]) -> str:
    """The prompt of a task's samples, written as its target text is (reverse-words: "ehT ")."""
    return shifted(PROMPTS.get(shift, DEFAULT_PROMPT), shift, params)


PREVIEW_LINES = 6  # lines of a held-out passage a task's preview shows


def passage(chunk: str, lines: int = PREVIEW_LINES) -> tuple[int, int]:
    """Where a preview's passage lies in a held-out chunk: (start, end) of `lines` whole lines
    from the first line that starts inside it (a chunk starts mid-word). Positions rather
    than the text, so that a shift that keeps every character's place (substitute,
    reverse-words) shows the very same passage changed."""
    start = chunk.find("\n") + 1 if "\n" in chunk[:-1] else 0
    end = start
    for _ in range(lines):
        found = chunk.find("\n", end)
        if found < 0:
            return start, len(chunk)
        end = found + 1
    return start, end - 1  # without the last line's newline


def source_text() -> TextDataset:
    """The text a `gpt` is pretrained on: the prose, on its fixed split. Its test split
    measures what a run forgot."""
    return TextDataset("prose", prose())


def target_text(shift: str, params: dict[str, Any]) -> TextDataset:
    """The target text of a task (its shift's parameters already checked: core.training.data),
    on the same fixed split as the prose.

    "substitute" and "reverse-words" keep every character's position, so their validation and
    test chunks are the prose's held-out passages, changed; "code" splits its own text by the
    same seed; every other shift ("none", "planted-rank") reads the prose itself."""
    if shift == "code":
        return TextDataset("code", code())
    if shift in ("substitute", "reverse-words"):
        return TextDataset(shift, shifted(prose(), shift, params))
    return source_text()
