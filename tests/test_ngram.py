"""The n-gram reference lines: proper distributions, known entropies, the cache."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scaling_lib.ngram import NGram, reference_entropies


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_order_is_a_distribution_over_the_vocabulary(order):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 7, size=400)
    m = NGram(t, vocab=9)  # two symbols never seen
    w = np.arange(9)
    for u, v in [(1, 2), (3, 3), (8, 8)]:  # seen and unseen histories
        p = m.prob(order, w, np.full(9, v), np.full(9, u))
        assert p.sum() == pytest.approx(1.0, abs=1e-12) and (p > 0).all()


def test_uniform_noise_costs_log_v_and_a_cycle_is_learned_by_context():
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 16, size=200_000)
    m = NGram(noise, vocab=16)
    held = rng.integers(0, 16, size=20_000)
    assert m.cross_entropy(held, 1) == pytest.approx(math.log(16), rel=1e-3)
    cycle = np.tile(np.arange(16), 1000)  # uniform unigrams, but the next token is fixed by the last
    c = NGram(cycle, vocab=16)
    assert c.cross_entropy(cycle[:3200], 1) == pytest.approx(math.log(16), rel=1e-3)
    assert c.cross_entropy(cycle[:3200], 2) < 0.01 and c.cross_entropy(cycle[:3200], 3) < 0.01


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 3"):
        NGram(np.array([1, 2]), vocab=4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        NGram(np.array([1, 2, 5]), vocab=4)


def test_the_tiny_corpus_reference_lines_fall_with_the_order_and_are_cached(tiny_corpus, tmp_path):
    ref = reference_entropies(tiny_corpus, cache=tmp_path)
    assert math.log(tiny_corpus.vocab_size) > ref["unigram"] > ref["bigram"] > ref["trigram"] > 0
    (cached,) = tmp_path.glob("ngram-tiny-bpe4096-*.json")
    assert reference_entropies(tiny_corpus, cache=tmp_path) == ref and cached.exists()


def test_filed_reference_lines_are_read_back_without_the_corpus_and_are_not_runs(tiny_corpus, tmp_path):
    from scaling_lib.ngram import store_reference, stored_reference
    from scaling_lib.store import Store

    runs = tmp_path / "runs"
    assert stored_reference("tiny", tiny_corpus.tokenizer_name, root=runs) is None
    ref = reference_entropies(tiny_corpus, cache=tmp_path / "cache")
    path = store_reference(ref, runs)
    assert path == runs / "reference" / f"ngram-tiny-{tiny_corpus.tokenizer_name}.json"
    assert stored_reference("tiny", tiny_corpus.tokenizer_name, root=runs) == ref
    assert Store(runs).paths() == []


def test_the_book_has_the_reference_lines_of_its_corpus():
    from scaling_lib.ngram import stored_reference

    ref = stored_reference("books", "bpe4096")
    assert ref is not None and ref["unigram"] > ref["bigram"] > ref["trigram"] > 0
