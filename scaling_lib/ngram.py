"""Reference lines for the chapters: what unigram, bigram and trigram statistics alone achieve.

An n-gram model is counted on the training split and scored on the validation split, in nats per
token, like the networks. Smoothing is interpolated absolute discounting (Ney et al. 1994, the
base of Kneser-Ney): every order keeps its counts less a discount D and hands the rest to the
order below, down to add-one unigrams, so no token of the vocabulary has probability zero.
Computed once per corpus and tokenizer, and cached beside the corpus; `store_reference` files the
result under ``<runs root>/reference/`` (committed), where the chapters read it without the corpus.
Numpy only.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

DISCOUNT = 0.75
ORDERS = (1, 2, 3)


class NGram:
    """Counts of an integer sequence up to trigrams, over a vocabulary of `vocab` symbols."""

    def __init__(self, tokens: np.ndarray, vocab: int, discount: float = DISCOUNT):
        t = np.asarray(tokens, dtype=np.int64)
        if t.size < 3:
            raise ValueError(f"an n-gram model needs at least 3 tokens, not {t.size}")
        if t.min() < 0 or t.max() >= vocab:
            raise ValueError(f"tokens must lie in [0, {vocab})")
        self.V, self.D = int(vocab), float(discount)
        self.unigram = (np.bincount(t, minlength=vocab) + 1.0) / (t.size + vocab)  # add-one
        self.bi = _Counts(t[:-1], t[1:], vocab)
        self.tri = _Counts(t[:-2] * vocab + t[1:-1], t[2:], vocab)

    def prob(self, order: int, w: np.ndarray, v: np.ndarray | None = None, u: np.ndarray | None = None) -> np.ndarray:
        """P(w | u, v) under the model of this order (v: the previous token, u: the one before)."""
        w = np.asarray(w, dtype=np.int64)
        if order == 1:
            return self.unigram[w]
        lower = self.prob(order - 1, w, v, u)
        counts, history = (self.bi, v) if order == 2 else (self.tri, np.asarray(u) * self.V + np.asarray(v))
        return counts.interpolate(np.asarray(history, dtype=np.int64), w, lower, self.D)

    def cross_entropy(self, tokens: np.ndarray, order: int) -> float:
        """Mean -ln P of each token from the third on (the same tokens for every order), nats per token."""
        t = np.asarray(tokens, dtype=np.int64)
        p = self.prob(order, t[2:], t[1:-1], t[:-2])
        return float(-np.log(p).mean())


class _Counts:
    """Counts c(h, w) of (history, next) pairs, and per history its total and its distinct followers."""

    def __init__(self, history: np.ndarray, nxt: np.ndarray, vocab: int):
        self.V = vocab
        pairs, c = np.unique(history * vocab + nxt, return_counts=True)
        self.pairs, self.pair_counts = pairs, c.astype(np.float64)
        hist, inverse = np.unique(pairs // vocab, return_inverse=True)
        self.hist = hist
        self.hist_total = np.bincount(inverse, weights=self.pair_counts)
        self.hist_types = np.bincount(inverse).astype(np.float64)

    def _lookup(self, keys: np.ndarray, table: np.ndarray, values: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(table, keys), 0, len(table) - 1)
        return np.where(table[i] == keys, values[i], 0.0)

    def interpolate(self, history: np.ndarray, w: np.ndarray, lower: np.ndarray, D: float) -> np.ndarray:
        c = self._lookup(history * self.V + w, self.pairs, self.pair_counts)
        total = self._lookup(history, self.hist, self.hist_total)
        types = self._lookup(history, self.hist, self.hist_types)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        p = np.maximum(c - D, 0.0) / safe + D * types / safe * lower
        return np.where(seen, p, lower)  # an unseen history: the order below alone


def reference_entropies(corpus, *, cache: Path | None = None) -> dict[str, Any]:
    """Unigram, bigram and trigram cross-entropies of the validation split (counted on the
    training split), in nats per token; cached once per corpus, tokenizer and corpus checksum."""
    from .data import cache_dir

    digest = hashlib.sha256(json.dumps(corpus.manifest["files"], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache or cache_dir() / "reference") / f"ngram-{corpus.name}-{corpus.tokenizer_name}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text())
    model = NGram(corpus.tokens("train"), corpus.vocab_size)
    val = corpus.tokens("val")
    out = dict(corpus=corpus.name, tokenizer=corpus.tokenizer_name, discount=DISCOUNT, val_tokens=int(val.size),
               **{f"{n}gram": model.cross_entropy(val, order) for n, order in zip(("uni", "bi", "tri"), ORDERS)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    return out


def _stored_path(corpus: str, tokenizer: str, root: Path | None) -> Path:
    from .store import default_root

    return Path(root or default_root()) / "reference" / f"ngram-{corpus}-{tokenizer}.json"


def store_reference(ref: dict[str, Any], root: Path | None = None) -> Path:
    """File the reference entropies of a corpus under the runs root (atomically), for the book."""
    from .store import write_json

    path = _stored_path(ref["corpus"], ref["tokenizer"], root)
    write_json(path, ref)
    return path


def stored_reference(corpus: str = "books", tokenizer: str = "bpe4096", root: Path | None = None) -> dict | None:
    """The filed reference entropies of a corpus and tokenizer, or None if none was filed."""
    path = _stored_path(corpus, tokenizer, root)
    return json.loads(path.read_text()) if path.exists() else None


def for_profile(profile_name: str, root: Path | None = None) -> dict | None:
    """The filed reference entropies of the corpus and tokenizer that a profile's runs train on."""
    from .plans import profile

    p = profile(profile_name)
    return stored_reference(p.get("corpus", "books"), p.get("tokenizer", "bpe4096"), root)
