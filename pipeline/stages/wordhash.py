"""Texts normalised, and their words as 64-bit hashes read from the bytes: what the leakage audit
(``pipeline.stages.leakage``) reads a large train set with, in a few numpy passes and no Python per text.

A text's words are those of its normalised form (:func:`normalise`: NFKC, lower case, punctuation and
symbols to spaces, one space between words). A text of printable ASCII (bytes 32-126, tab, newlines) is
normalised on its bytes by one translation table (upper case to lower, every byte that is not a letter
or a digit a separator), which gives exactly the words :func:`normalise` gives; any other text goes
through :func:`normalise` (Arrow) first, and its words are then read the same way.

A word's hash is its bytes when it has at most 8 (exact), longer words fold in 8 bytes at a time; a
text's hash sums its words' hashes (mixed). Equal words and equal normalised texts hash equal; unequal
ones rarely do (a text's words in another order always do), and whatever uses the hashes checks the
texts themselves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

ENDS = " .,;:!?\"'()[]\t\n"  # trimmed from both ends of a text without a regular expression
SEPARATOR, ODD = 0, 255  # translated bytes: between words; a byte that needs Arrow's normalisation
GOLDEN, MIX = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9)  # odd multipliers
MASKS = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 8)] + [2**64 - 1], dtype=np.uint64)


def normalise(texts):
    """NFKC, lower case, punctuation and symbols to spaces, one space between words. Vectorised on Arrow:
    NFKC and Unicode lower case only where a text is not ASCII; the regular expression only on texts with
    something besides letters, digits and single spaces once the ends are trimmed (its cost is per text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    texts = texts.cast(pa.string())
    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    if pc.all(pc.string_is_ascii(texts)).as_py():
        texts, odd = pc.ascii_trim(pc.ascii_lower(texts), characters=ENDS), r"[^a-z0-9 ]|  "
    else:
        texts = pc.utf8_trim(pc.utf8_lower(pc.utf8_normalize(texts, "NFKC")), characters=ENDS)
        odd = r"[^\pL\pN ]|  "
    odd = pc.match_substring_regex(texts, odd)
    if pc.any(odd).as_py():
        fixed = pc.replace_substring_regex(pc.filter(texts, odd), r"[\p{P}\p{S}\s]+", " ")
        texts = pc.replace_with_mask(texts, odd, pc.utf8_trim_whitespace(fixed))
    return texts


def _tables() -> tuple[bytes, bytes]:
    """Byte translations: of a raw text (letters and digits kept, upper case lowered; the rest of
    printable ASCII, tab and newlines separate words; any other byte is ODD), and of a normalised one
    (its single spaces separate words; a NUL byte becomes 1, so that only separators are 0)."""
    raw = bytearray(256)
    for byte in range(256):
        char = chr(byte)
        if char.isascii() and char.isalnum():
            raw[byte] = ord(char.lower())
        elif 32 <= byte < 127 or char in "\t\n\f\r":
            raw[byte] = SEPARATOR
        else:
            raw[byte] = ODD
    normalised = bytearray(range(256))
    normalised[ord(" ")], normalised[0] = SEPARATOR, 1
    return bytes(raw), bytes(normalised)


RAW, NORMALISED = _tables()


@dataclasses.dataclass(frozen=True)
class Words:
    """The words of some texts: the text of each word (a text's words in order), their hashes, and
    each text's hash (of its words in order; a text of no words hashes 0)."""

    text: np.ndarray  # int64, one per word
    hashes: np.ndarray  # uint64, one per word
    text_hashes: np.ndarray  # uint64, one per text


def words(texts, normalised: bool = False) -> Words:
    """The words of a pyarrow string array (``normalised``: its texts are already :func:`normalise`'s)."""
    import pyarrow as pa

    texts = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    plain = pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)
    texts = texts if plain else texts.cast(pa.large_string())  # read in place: no copy of the bytes
    padded, offsets = _translated(texts, NORMALISED if normalised else RAW)
    data = np.frombuffer(padded, dtype=np.uint8)[:-8]
    odd = np.zeros(0, dtype=np.int64) if normalised else _odd_texts(data, offsets)
    text, hashes, text_hashes = _read(padded, offsets)
    if len(odd) == 0:
        return Words(text, hashes, text_hashes)
    keep = np.ones(len(texts), dtype=bool)
    keep[odd] = False
    kept = keep[text]
    fixed = words(normalise(texts.take(pa.array(odd))), normalised=True)
    text_hashes[odd] = fixed.text_hashes
    return Words(
        np.concatenate([text[kept], odd[fixed.text]]), np.concatenate([hashes[kept], fixed.hashes]), text_hashes
    )


def _translated(texts, table: bytes) -> tuple[bytes, np.ndarray]:
    """The texts' bytes translated by ``table``, 8 zero bytes after them (so that 8 bytes can be read
    at any word's start), and the offsets of the texts in them."""
    import pyarrow as pa

    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], dtype=width)[texts.offset : texts.offset + len(texts) + 1]
    offsets = offsets.astype(np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    data = texts.buffers()[2]
    raw = memoryview(data)[start:end] if data is not None else b""
    return bytes(raw).translate(table) + bytes(8), offsets - start


def _odd_texts(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The texts holding a byte the raw translation cannot normalise (not ASCII, a control character)."""
    at = np.flatnonzero(data == ODD)
    return np.unique(np.searchsorted(offsets, at, side="right") - 1) if len(at) else at


def _read(padded: bytes, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(text of each word, word hashes, text hashes) of translated texts: a word is a run of
    non-separator bytes inside one text."""
    data = np.frombuffer(padded, dtype=np.uint8)[:-8]
    starts, ends = _spans(data, offsets)
    counts = np.diff(np.searchsorted(starts, offsets))
    text = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    hashes = _hashes(padded, starts, ends)
    return text, hashes, _text_hashes(hashes, counts)


def _spans(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every run of non-separator bytes, a text's first and last bytes closing any run."""
    if len(data) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    word = data != SEPARATOR
    starts, ends = np.empty(len(data), dtype=bool), np.empty(len(data), dtype=bool)
    starts[0], ends[-1] = word[0], word[-1]
    np.greater(word[1:], word[:-1], out=starts[1:])
    np.greater(word[:-1], word[1:], out=ends[:-1])
    first, last = offsets[:-1], offsets[1:] - 1
    filled = last >= first
    first, last = first[filled], last[filled]
    starts[first], ends[last] = word[first], word[last]
    return np.flatnonzero(starts), np.flatnonzero(ends) + 1


def _hashes(padded: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Each word's first 8 bytes as one number (the bytes past its end masked off), 8 more folded in at
    a time for a longer word."""
    view = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    lengths = ends - starts
    out = view[starts] & MASKS[np.minimum(lengths, 8)]
    longer, step = np.flatnonzero(lengths > 8), 8
    while len(longer):
        chunk = view[starts[longer] + step] & MASKS[np.minimum(lengths[longer] - step, 8)]
        out[longer] = (out[longer] * GOLDEN) ^ chunk
        step += 8
        longer = longer[lengths[longer] > step]
    return out


def _text_hashes(hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each text's hash: the sum of its words' hashes, mixed (0 for no words). Equal texts hash equal;
    so do texts of the same words in another order, which the comparison of texts tells apart."""
    out = np.zeros(len(counts), dtype=np.uint64)
    if len(hashes) == 0:
        return out
    mixed = hashes * GOLDEN
    mixed ^= mixed >> np.uint64(29)
    filled = counts > 0
    out[filled] = np.add.reduceat(mixed, (np.cumsum(counts) - counts)[filled])
    return out
