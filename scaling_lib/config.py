"""Run configuration: one frozen, typed description of a training run, and its stable key."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

ARCHS = ("gpt", "lstm")
SCHEDULES = ("cosine", "wsd", "constant")
DTYPES = ("fp32", "bf16")
DEVICES = ("cpu", "cuda")

# Fields that say where a record lives or how it is shown, not what was trained.
_NOT_IN_KEY = ("sweep",)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; its hash is the run's key in the store."""

    sweep: str = "adhoc"
    arch: str = "gpt"
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 0  # 0: heads of 32 channels where d_model allows (at least one)
    d_ff: int = 0  # 0: 4 * d_model, as in Kaplan et al. 2020
    n_ctx: int = 128
    tokenizer: str = "bpe4096"  # "byte" or "bpe<vocab size>"
    corpus: str = "books"
    batch_size: int = 32  # sequences a step; B = batch_size * n_ctx tokens
    tokens: int = 2_000_000  # the training budget D in tokens (the longest, for wsd)
    budgets: tuple[int, ...] = ()  # wsd only: shorter budgets, each a cooldown branched off the stable phase
    data_tokens: int = 0  # 0: the whole training split; else only its first data_tokens tokens (L(D))
    early_stop: bool = False  # report the best validation loss seen, and stop once it is well past
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

    def __post_init__(self) -> None:
        _check(self.arch in ARCHS, f"arch must be one of {ARCHS}, not {self.arch!r}")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        _check(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        _check(self.device in DEVICES, f"device must be one of {DEVICES}, not {self.device!r}")
        for name in ("n_layer", "d_model", "n_ctx", "batch_size", "tokens"):
            _check(getattr(self, name) > 0, f"{name} must be positive, not {getattr(self, name)}")
        _check(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, not {self.lr}")
        for name in ("n_head", "d_ff", "data_tokens"):
            _check(getattr(self, name) >= 0, f"{name} must be positive (or 0 for the default), not {getattr(self, name)}")
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
        """Non-embedding parameters, 2 n_layer d_model (2 d_attn + d_ff) with d_attn = d_model."""
        if self.arch == "lstm":
            return 8 * self.n_layer * self.d_model**2  # four gates, input and recurrent weights
        return 2 * self.n_layer * self.d_model * (2 * self.d_model + self.d_ff)

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
        """A stable hash of what was trained (not of where it is filed)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_KEY}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        extra = "".join([
            f"-ff{self.d_ff}" if self.d_ff != 4 * self.d_model else "",
            f"-h{self.n_head}" if self.n_head != RunConfig(d_model=self.d_model).n_head else "",
            f"-D{_short(self.data_tokens)}" if self.data_tokens else "",
        ]) if self.arch == "gpt" else ""
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
        return RunConfig.from_dict(d)

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


def lr_rule_pilot(N: float) -> float:
    """Best peak LR against N measured in this machine's pilot (training.md): 5.6 N^-0.57, capped at 0.1."""
    return float(min(0.1, 5.6 * N**-0.57))


def lr_rule_kaplan(N: float) -> float:
    """Kaplan et al. 2020, Eq. D.1: LR(N) = 0.003239 - 0.0001395 ln N."""
    return 0.003239 - 0.0001395 * math.log(N)


def _short(n: int) -> str:
    for unit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= unit:
            return f"{n / unit:.4g}{suffix}"
    return str(n)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# The model-size ladder (n_layer, d_model): ~768 to ~1.5M non-embedding parameters on the CPU;
# the gpu profile extends it by about a decade.
LADDER_CPU = ((1, 8), (1, 16), (2, 24), (2, 48), (3, 64), (4, 96), (4, 128), (5, 160))
LADDER_GPU_EXTRA = ((6, 256), (8, 320))

# Shapes at N ~ 3e5 for Fig. 5: depth against width (12 n_layer d_model^2 fixed), feed-forward
# ratio at 4 layers, and attention head dimension at (4, 96).
SHAPES_FIG5 = (
    *(dict(n_layer=L, d_model=d) for L, d in ((1, 160), (2, 112), (4, 80), (6, 64), (8, 56), (12, 46), (16, 40))),
    *(dict(n_layer=4, d_model=d, d_ff=r * d) for r, d in ((1, 112), (2, 96), (8, 61))),
    *(dict(n_layer=4, d_model=96, n_head=h) for h in (1, 2, 6, 12)),
)

# A profile fixes the grid sizes a notebook or sweep uses; notebooks never type them.
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        corpus="tiny", device="cpu", batch_size=8, n_ctx=64, eval_tokens=4096,
        ladder=((1, 8), (1, 16), (2, 16)), tokens=40_960, budgets=(20_480,), seeds=(0, 1), seed_sizes=((1, 8),),
        long_max_N=1_000, long_tokens=81_920, long_budgets=(20_480, 40_960),
        lr_grid=(1e-2, 3e-2), lr_tokens=20_480,
        data_model=(1, 16), data_budget=40_960, data_sizes=(32_768, 65_536, 0),
        shapes=(dict(n_layer=1, d_model=16), dict(n_layer=2, d_model=12)), shape_tokens=20_480,
        lstm_ladder=((1, 8), (1, 16), (2, 16)), lstm_tokens=40_960, lstm_lr_grid=(1e-2, 3e-2),
        train_missing=True,
    ),
    "book": dict(
        corpus="books", device="cpu", batch_size=32, n_ctx=128, eval_tokens=65_536,
        ladder=LADDER_CPU, tokens=8_000_000, budgets=(1_000_000, 2_000_000, 4_000_000), seeds=(0, 1, 2),
        seed_sizes=((1, 16), (2, 48), (4, 96)),
        # sizes up to long_max_N (what two cores have afforded so far) go on to long_tokens; the shared budgets keep the
        # shortest budget, so the warmup, the data order and the stable phase are the 8M runs' own
        long_max_N=800_000, long_tokens=16_000_000, long_budgets=(1_000_000, 2_000_000, 4_000_000, 8_000_000),
        lr_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1), lr_tokens=2_000_000,
        data_model=(4, 128), data_budget=16_000_000, data_sizes=(2**19, 2**20, 2**21, 2**22, 0),
        shapes=SHAPES_FIG5, shape_tokens=4_000_000,
        lstm_ladder=((1, 16), (1, 32), (1, 64), (2, 64), (2, 128)), lstm_tokens=8_000_000,
        lstm_lr_grid=(3e-3, 1e-2, 3e-2),
        train_missing=False,
    ),
}
PROFILES["cpu"] = dict(PROFILES["book"], train_missing=True)
PROFILES["gpu"] = dict(
    PROFILES["book"],
    device="cuda", ladder=LADDER_CPU + LADDER_GPU_EXTRA, tokens=32_000_000, long_max_N=0,
    budgets=(2_000_000, 4_000_000, 8_000_000, 16_000_000), data_budget=32_000_000, shape_tokens=16_000_000,
    lstm_ladder=((1, 16), (1, 32), (1, 64), (2, 64), (2, 128), (2, 256)), lstm_tokens=16_000_000,
    train_missing=True,
)


def profile(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The named profile, with some of its entries replaced; a clear error for an unknown name or entry."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    unknown = sorted(set(overrides or {}) - set(PROFILES[name]))
    if unknown:
        raise ValueError(f"profile {name!r} has no entry {', '.join(map(repr, unknown))} to override")
    return dict(PROFILES[name], **(overrides or {}))
