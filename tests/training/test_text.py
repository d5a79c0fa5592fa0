"""The text for the character GPT (core/training/text.py): corpus, alphabet, splits, batches and
the text shifts. Everything here reads the running Python's own files; nothing is downloaded."""

import argparse
import hashlib
import importlib.machinery
import importlib.util
import math
import pydoc_data.topics
import re
import string
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.training import text

# sha256 of chunk_split(454) (train, val, test indices as int64 little-endian, in that order):
# 454 is the prose's chunk count on Python 3.11. If this fails, the split changed and every
# model card's held-out loss is off.
PINNED_SPLIT_454 = "c87170069824b224ad55b2587a65b40d8bbe368c26053403e05042fee92a604c"


def split_checksum(parts: dict[str, np.ndarray]) -> str:
    arrays = (np.ascontiguousarray(parts[name], dtype="<i8") for name in ("train", "val", "test"))
    return hashlib.sha256(b"".join(array.tobytes() for array in arrays)).hexdigest()


@pytest.fixture(scope="module")
def prose() -> text.TextDataset:
    return text.source_text()


# -------------------------------------------------------------------------------- corpus ---


def test_corpus_sizes_are_within_expected_bounds(prose):
    code = text.target_text("code", {})
    assert 300_000 < len(prose.text) < 1_500_000  # 464 970 characters on Python 3.11.7
    assert 300_000 < len(code.text) < 1_500_000  # 476 605
    assert 0.5 < len(code.text) / len(prose.text) < 2  # two domains of about the same size
    for dataset in (prose, code):  # almost all of it is in the alphabet
        unknown = (text.encode(dataset.text) == text.UNKNOWN).float().mean().item()
        assert unknown < 0.005


def test_prose_is_the_topics_in_sorted_key_order(prose):
    topics = pydoc_data.topics.topics
    assert len(topics) >= 79
    first, last = min(topics), max(topics)
    assert prose.text.startswith(topics[first]) and prose.text.endswith(topics[last])


def test_code_is_the_modules_source_in_sorted_order():
    assert list(text.STDLIB_MODULES) == sorted(text.STDLIB_MODULES)
    source = text.code()
    with open(argparse.__file__, encoding="utf-8") as file:
        assert source.startswith(file.read())
    with open(textwrap.__file__, encoding="utf-8") as file:
        assert source.endswith(file.read())


def test_missing_prose_is_one_line_naming_the_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # import now fails
    with pytest.raises(ValueError, match=r"pydoc_data\.topics") as caught:
        text.prose()
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=r"pydoc_data\.topics"):
        text.target_text("substitute", {"seed": 0})


def test_missing_source_is_one_line_naming_the_module(monkeypatch):
    real = importlib.util.find_spec

    def bytecode_only(name, *args):
        if name == "difflib":
            return importlib.machinery.ModuleSpec(name, None, origin="/nowhere/difflib.pyc")
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", bytecode_only)
    with pytest.raises(ValueError, match=r"module difflib \(/nowhere/difflib.pyc\)") as caught:
        text.code()
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------- alphabet ---


def test_alphabet_is_printable_ascii_and_newline():
    assert set(text.ALPHABET) == set(string.printable) - set("\t\r\x0b\x0c")
    assert len(set(text.ALPHABET)) == len(text.ALPHABET) == 96
    assert text.VOCAB_SIZE == 97 and text.UNKNOWN == 96


def test_encode_decode_round_trip(prose):
    generator = np.random.default_rng(0)
    sample = "".join(generator.choice(list(text.ALPHABET), 5000))
    encoded = text.encode(sample)
    assert encoded.dtype == torch.int64 and len(encoded) == len(sample)
    assert encoded.tolist() == [text.ALPHABET.index(c) for c in sample]  # one by one
    assert text.decode(encoded) == sample
    assert text.decode(encoded.tolist()) == sample
    known = "".join(c for c in prose.text[:20_000] if c in text.ALPHABET)
    assert text.decode(text.encode(known)) == known


def test_unknown_characters_are_one_index_and_reported():
    prompt = "café — naïve 😀 done\tcafé"
    encoded = text.encode(prompt)
    outside = [c not in text.ALPHABET for c in prompt]
    assert ((encoded == text.UNKNOWN).tolist()) == outside
    assert text.decode(encoded) == "caf� � na�ve � done�caf�"
    assert text.unknown_characters(prompt) == ["é", "—", "ï", "😀", "\t"]
    assert text.unknown_characters("Hello, world!\n") == []


# --------------------------------------------------------------------------------- splits ---


def test_chunk_split_is_pinned_and_partitions_the_chunks():
    parts = text.chunk_split(454)
    assert split_checksum(parts) == PINNED_SPLIT_454
    together = np.concatenate(list(parts.values()))
    assert sorted(together.tolist()) == list(range(454))  # disjoint, and every chunk
    assert [len(parts[name]) for name in ("train", "val", "test")] == [364, 45, 45]
    for part in parts.values():
        assert np.all(np.diff(part) > 0)  # reading order
    assert split_checksum(text.chunk_split(454, seed=1)) != PINNED_SPLIT_454


def test_splits_are_the_same_bytes_for_a_seed_and_differ_for_another(prose):
    again = text.TextDataset("prose", text.prose())
    other = text.TextDataset("prose", text.prose(), seed=1)
    for name in ("train", "val", "test"):
        assert prose.split(name).numpy().tobytes() == again.split(name).numpy().tobytes()
        assert not torch.equal(prose.split(name), other.split(name))
    assert prose.fingerprint == again.fingerprint


def test_split_chunks_are_the_texts_chunks(prose):
    val = prose.split("val")
    indices = text.chunk_split(prose.n_chunks)["val"]
    n = prose.chunk_length
    for row, index in zip(val[:5], indices[:5], strict=True):
        assert text.decode(row) == text.decode(text.encode(prose.text[index * n : (index + 1) * n]))
    sizes = prose.sizes
    assert sizes == {name: len(prose.split(name)) * n for name in ("train", "val", "test")}
    assert len(prose.text) - n < sum(sizes.values()) <= len(prose.text)
    with pytest.raises(ValueError, match="unknown split"):
        prose.split("validation")


def test_batches_are_next_character_windows_and_deterministic(prose):
    chunks = prose.split("train")
    x, y = text.batch(chunks, 8, 64, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 64) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])  # y is x one character on
    rows = [text.decode(row) for row in chunks]
    for window, target in zip(x, y, strict=True):  # each window lies inside one chunk
        passage = text.decode(window) + text.decode(target[-1:])
        assert any(passage in row for row in rows)
    x2, y2 = text.batch(chunks, 8, 64, torch.Generator().manual_seed(0))
    assert x.numpy().tobytes() == x2.numpy().tobytes() and torch.equal(y, y2)
    x3, _ = text.batch(chunks, 8, 64, torch.Generator().manual_seed(1))
    assert not torch.equal(x, x3)
    for context in (0, prose.chunk_length):
        with pytest.raises(ValueError, match="context must be between 1 and 1023"):
            text.batch(chunks, 8, context, torch.Generator())


def test_windows_cover_each_chunk_in_order_without_overlap():
    chunks = torch.arange(2 * 10).view(2, 10)
    x, y = text.windows(chunks, 3)  # (10 - 1) // 3 = 3 windows a chunk
    assert x.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [10, 11, 12], [13, 14, 15], [16, 17, 18]]
    assert torch.equal(y, x + 1)
    x, y = text.windows(chunks, 4)  # 2 windows a chunk: the third would need character 12
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [10, 11, 12, 13], [14, 15, 16, 17]]


# --------------------------------------------------------------------------------- metric ---


def test_bits_per_character_and_accuracy_against_direct_computations():
    logits = torch.zeros(5, text.VOCAB_SIZE)  # uniform: log2(97) bits
    y = torch.tensor([0, 1, 2, 3, 4])
    loss = F.cross_entropy(logits, y).item()
    assert text.bits_per_character(loss) == pytest.approx(math.log2(97))
    logits[[0, 1, 2], [0, 1, 7]] = 5.0  # right, right, wrong; two ties go to index 0: one right
    assert text.next_character_accuracy(logits, y) == pytest.approx(2 / 5)


# --------------------------------------------------------------------------------- shifts ---


def test_substitution_is_a_bijection_on_letters_that_keeps_everything_else():
    lower = string.ascii_lowercase
    for seed in range(5):
        image = text.substitute(lower, seed)
        assert sorted(image) == list(lower)  # a bijection of the 26 letters
        assert all(a != b for a, b in zip(lower, image, strict=True))  # every letter moves
        assert text.substitute(lower.upper(), seed) == image.upper()  # cases alike
        others = string.digits + string.punctuation + " \n\té—"
        assert text.substitute(others, seed) == others
        undo = str.maketrans(image + image.upper(), lower + lower.upper())
        assert text.substitute("Hello, World 42!", seed).translate(undo) == "Hello, World 42!"
    assert text.substitute(lower, 0) != text.substitute(lower, 1)
    assert text.substitute(lower, 0) == text.letter_permutation(0)  # the same for a seed


def test_reverse_words_against_an_independent_regex(prose):
    assert (
        text.reverse_words("Hello, world! it's 42x-ray\n  ok") == "olleH, dlrow! ti's 42x-yar\n  ko"
    )
    expected = re.sub(r"[A-Za-z]+", lambda match: match[0][::-1], prose.text)
    reversed_prose = text.reverse_words(prose.text)
    assert reversed_prose == expected and len(reversed_prose) == len(prose.text)
    assert text.reverse_words(reversed_prose) == prose.text  # its own inverse


def test_text_tasks_change_the_prose_as_named(prose):
    substituted = text.target_text("substitute", {"seed": 3})
    assert substituted.text == text.substitute(prose.text, 3)
    for row, before in zip(substituted.split("test"), prose.split("test"), strict=True):
        assert text.decode(row) == text.substitute(text.decode(before), 3)  # same passages
    assert text.target_text("reverse-words", {}).text == text.reverse_words(prose.text)
    assert text.target_text("none", {}).text == prose.text
    assert text.target_text("planted-rank", {"rank": 4}).text == prose.text
    assert text.target_text("code", {}).text == text.code()
    preview = "The cat sat."
    assert text.shifted(preview, "reverse-words", {}) == "ehT tac tas."
    assert text.shifted(preview, "code", {}) == preview


def test_each_task_prompts_in_its_own_writing():
    assert text.prompt_for("none", {}) == "The "
    assert text.prompt_for("reverse-words", {}) == "ehT "
    assert text.prompt_for("code", {}) == "def "
    assert text.prompt_for("substitute", {"seed": 3}) == text.substitute("The ", 3)
