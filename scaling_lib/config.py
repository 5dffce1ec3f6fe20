"""Run configuration: one frozen, typed description of a training run, and its stable key."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

from . import arch as arch_registry

SCHEDULES = ("cosine", "wsd", "constant")
DTYPES = ("fp32", "bf16")
DEVICES = ("cpu", "cuda")

# Fields that say where a record lives or how it is shown, not what was trained.
_NOT_IN_KEY = ("sweep",)

# How runs are evaluated (train.py). 1: the first 132 stored runs (windows that may overlap, the
# cooldown branches scored on the curve's windows, no standard errors). 2: non-overlapping windows,
# every budget scored on the same final windows (with its standard error), the curve's last point
# equal to the longest budget's score, early stopping reporting the test loss where it selected.
EVAL_VERSION = 2

# Fields added after the first runs were stored, each with the value that every run had before the
# field existed. A field that still has that value stays out of the key, so that adding a field
# re-keys no stored record; a record that lacks a field is read with this value.
INTRODUCED: dict[str, Any] = {
    "eval_version": 1,
    "n_recur": 1,
    "eval_per_position": False,
    "dropout": 0.0,
    "noise_batches": 0,
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; its hash is the run's key in the store."""

    sweep: str = "adhoc"
    arch: str = "gpt"
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 0  # 0: heads of 32 channels where d_model allows (at least one)
    d_ff: int = 0  # 0: 4 * d_model, as in Kaplan et al. 2020
    n_recur: int = 1  # times the stack of blocks is applied with the same parameters (arch "ut"; 1: no reuse)
    n_ctx: int = 128
    tokenizer: str = "bpe4096"  # "byte" or "bpe<vocab size>"
    corpus: str = "books"
    batch_size: int = 32  # sequences a step; B = batch_size * n_ctx tokens
    tokens: int = 2_000_000  # the training budget D in tokens (the longest, for wsd)
    budgets: tuple[int, ...] = ()  # wsd only: shorter budgets, each a cooldown branched off the stable phase
    data_tokens: int = 0  # 0: the whole training split; else only its first data_tokens tokens (L(D))
    early_stop: bool = False  # report the best validation loss seen, and stop once it is well past
    dropout: float = 0.0  # transformers: share of activations dropped in training only (Kaplan §4 uses 0.1)
    schedule: str = "cosine"
    lr: float = 3e-3  # peak learning rate
    warmup_tokens: int = -1  # -1: max(N tokens, 1% of the budget), capped at 10% (Porian et al. 2024)
    min_lr_ratio: float = 0.1  # cosine ends at (and wsd cools down to) this fraction of the peak
    cooldown_frac: float = 0.2  # wsd: share of each budget spent cooling down (Hägele et al. 2024)
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    dtype: str = "fp32"  # "bf16": autocast the matrix products
    device: str = "cpu"
    seed: int = 0
    eval_tokens: int = 65_536  # validation tokens per evaluation during training
    evals_per_decade: int = 8  # evaluation steps, log-spaced in steps
    eval_per_position: bool = False  # also store the loss at every context position at each curve evaluation
    # at each curve evaluation, the gradient noise scale B_simple (McCandlish et al. 2018) measured on this many
    # batches of batch_size sequences drawn from the training split (train.noise_point); 0: not measured
    noise_batches: int = 0
    eval_version: int = EVAL_VERSION  # how the run is evaluated (see EVAL_VERSION)

    def __post_init__(self) -> None:
        _check(self.arch in arch_registry.names(), f"arch must be one of {arch_registry.names()}, not {self.arch!r}")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        _check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        _check(self.device in DEVICES, f"device must be one of {DEVICES}, not {self.device!r}")
        for name in ("n_layer", "d_model", "n_ctx", "batch_size", "tokens"):
            _check(getattr(self, name) > 0, f"{name} must be positive, not {getattr(self, name)}")
        _check(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, not {self.lr}")
        for name in ("n_head", "d_ff", "data_tokens"):
            _check(getattr(self, name) >= 0, f"{name} must be positive (or 0 for the default), not {getattr(self, name)}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be at least 0 and below 1, not {self.dropout}")
        _check(self.dropout == 0.0 or self.arch in ("gpt", "ut"),
               f"dropout applies to the transformers (arch 'gpt' or 'ut'), not to arch {self.arch!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        _check(isinstance(self.noise_batches, numbers.Integral) and not isinstance(self.noise_batches, bool)
               and self.noise_batches >= 0,
               f"noise_batches must be a whole number of batches, at least 0 (0: no noise scale), "
               f"not {self.noise_batches!r}")
        object.__setattr__(self, "noise_batches", int(self.noise_batches))
        _check(self.noise_batches == 0 or self.batch_size >= 2,
               f"noise_batches needs a batch of at least 2 sequences (it splits each batch in two or more), "
               f"not batch_size {self.batch_size}")
        _check(self.eval_version in (1, 2), f"eval_version must be 1 or 2, not {self.eval_version}")
        _check(self.n_recur >= 1, f"n_recur must be at least 1, not {self.n_recur}")
        _check(self.n_recur == 1 or arch_registry.get(self.arch).reuse is not None,
               f"arch {self.arch!r} reuses no parameters: n_recur must be 1, not {self.n_recur} "
               f"(the recurrent transformer is arch 'ut')")
        vocab_size(self.tokenizer)  # validates the name
        # Resolve the defaults so that the key names what was actually trained.
        if self.n_head == 0:
            n_head = max(1, self.d_model // 32)
            while self.d_model % n_head:
                n_head -= 1
            object.__setattr__(self, "n_head", n_head)
        if self.d_ff == 0:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        _check(self.d_model % self.n_head == 0, f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        budgets = tuple(sorted(int(b) for b in self.budgets))
        object.__setattr__(self, "budgets", budgets)
        if budgets:
            _check(self.schedule == "wsd", "budgets are cooldown branches: they need schedule='wsd'")
            _check(all(0 < b < self.tokens for b in budgets), "every budget must lie below tokens")
        if self.warmup_tokens < 0:
            object.__setattr__(self, "warmup_tokens", default_warmup(self.N, self.shortest_budget))

    # --- derived quantities (Kaplan et al. 2020, Table 1) ---
    @property
    def vocab(self) -> int:
        return vocab_size(self.tokenizer)

    @property
    def N(self) -> int:
        """Non-embedding parameters as Kaplan counts them (arch.py): for the transformer,
        2 n_layer d_model (2 d_attn + d_ff) with d_attn = d_model."""
        return arch_registry.get(self.arch).N(self)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.n_ctx

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.tokens_per_step)

    @property
    def shortest_budget(self) -> int:
        return self.budgets[0] if self.budgets else self.tokens

    @property
    def all_budgets(self) -> tuple[int, ...]:
        return (*self.budgets, self.tokens)

    # --- identity ---
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["budgets"] = list(self.budgets)
        return d

    @property
    def key(self) -> str:
        """A stable hash of what was trained (not of where it is filed).

        Fields that still hold the value they had when they were introduced (INTRODUCED) stay out
        of the hash: a new field with a neutral default leaves every stored key as it was.
        """
        d = {k: v for k, v in self.to_dict().items()
             if k not in _NOT_IN_KEY and not (k in INTRODUCED and v == INTRODUCED[k])}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        extra = "".join([
            f"-ff{self.d_ff}" if self.d_ff != 4 * self.d_model else "",
            f"-h{self.n_head}" if self.n_head != RunConfig(d_model=self.d_model).n_head else "",
            f"-D{_short(self.data_tokens)}" if self.data_tokens else "",
        ]) if self.arch in ("gpt", "ut") else ""
        extra += f"-r{self.n_recur}" if self.n_recur != 1 else ""
        extra += f"-drop{self.dropout:g}" if self.dropout else ""
        extra += f"-ctx{self.n_ctx}" if self.n_ctx != 128 else ""  # every stored run has 128
        extra += f"-b{self.batch_size}" if self.batch_size != 32 else ""  # and 32 sequences a step
        return f"{self.arch}-L{self.n_layer}-d{self.d_model}{extra}-T{_short(self.tokens)}-lr{self.lr:.3g}-s{self.seed}"

    def replace(self, **changes: Any) -> "RunConfig":
        d = self.to_dict()
        # derived defaults are re-resolved when the shape changes
        if "d_model" in changes:
            d["n_head"] = changes.get("n_head", 0)
            d["d_ff"] = changes.get("d_ff", 0)
        if any(k in changes for k in ("d_model", "n_layer", "tokens", "budgets", "d_ff", "arch")):
            d["warmup_tokens"] = changes.get("warmup_tokens", -1)
        d.update(changes)
        return type(self).from_dict(d)

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> "RunConfig":
        """The config of a stored record: a field the record lacks predates it, and takes the value
        it had when it was introduced (not today's default)."""
        return cls.from_dict({**{k: v for k, v in INTRODUCED.items() if k not in d}, **d})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        d = dict(d)
        if "budgets" in d:
            d["budgets"] = tuple(d["budgets"])
        return cls(**d)


def vocab_size(tokenizer: str) -> int:
    """Vocabulary size from a tokenizer name: 'byte' -> 256, 'bpe4096' -> 4096."""
    if tokenizer == "byte":
        return 256
    if tokenizer.startswith("bpe") and tokenizer[3:].isdigit() and 257 <= int(tokenizer[3:]) <= 65535:
        return int(tokenizer[3:])
    raise ValueError(f"unknown tokenizer {tokenizer!r}: use 'byte' or 'bpe<vocab>' with 257 <= vocab <= 65535")


def default_warmup(N: int, budget: int) -> int:
    """About N tokens of warmup (Porian et al. 2024), at least 1% and at most 10% of the budget."""
    return int(min(max(N, 0.01 * budget), 0.1 * budget))


def _short(n: int) -> str:
    for unit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= unit:
            return f"{n / unit:.4g}{suffix}"
    return str(n)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
