"""Counting parameters and compute (Kaplan et al. 2020, §2.1, Table 1).

Pure arithmetic on the shape: no torch here, so the analysis chapters can count without a model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

PF_DAY = 8.64e19  # FLOPs in one petaflop/s-day


@dataclass(frozen=True)
class Shape:
    n_layer: int
    d_model: int
    n_ctx: int
    vocab: int
    d_ff: int = 0  # 0: 4 d_model
    d_attn: int = 0  # 0: d_model

    def __post_init__(self) -> None:
        for name in ("n_layer", "d_model", "n_ctx", "vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")
        if self.d_ff < 0 or self.d_attn < 0:
            raise ValueError("d_ff and d_attn must be positive (or 0 for the default)")
        object.__setattr__(self, "d_ff", self.d_ff or 4 * self.d_model)
        object.__setattr__(self, "d_attn", self.d_attn or self.d_model)

    @classmethod
    def of(cls, cfg) -> "Shape":
        """The shape of a RunConfig (transformers only)."""
        return cls(cfg.n_layer, cfg.d_model, cfg.n_ctx, cfg.vocab, cfg.d_ff)


def N(s: Shape) -> int:
    """Non-embedding parameters, 2 d_model n_layer (2 d_attn + d_ff) (Kaplan et al. 2020, Table 1)."""
    return 2 * s.d_model * s.n_layer * (2 * s.d_attn + s.d_ff)


def N_embedding(s: Shape) -> int:
    """Token and position embeddings, (n_vocab + n_ctx) d_model (Table 1); the de-embedding is tied."""
    return (s.vocab + s.n_ctx) * s.d_model


def N_total(s: Shape) -> int:
    return N(s) + N_embedding(s)


def C_forward(s: Shape) -> float:
    """Forward FLOPs per token, 2N + 2 n_layer n_ctx d_attn (Kaplan et al. 2020, Eq. 2.2)."""
    return 2 * N(s) + 2 * s.n_layer * s.n_ctx * s.d_attn


def C_forward_table(s: Shape) -> dict[str, float]:
    """Every row of Table 1's forward FLOPs per token, including embedding and de-embedding."""
    return {
        "embed": 4 * s.d_model,
        "attention: QKV": 2 * s.n_layer * s.d_model * 3 * s.d_attn,
        "attention: mask": 2 * s.n_layer * s.n_ctx * s.d_attn,
        "attention: project": 2 * s.n_layer * s.d_attn * s.d_model,
        "feed-forward": 2 * s.n_layer * 2 * s.d_model * s.d_ff,
        "de-embed": 2 * s.d_model * s.vocab,
    }


def C_forward_exact(s: Shape) -> float:
    """Forward FLOPs per token with the embedding and the de-embedding counted (all Table 1 rows)."""
    return float(sum(C_forward_table(s).values()))


def C_forward_counted(s: Shape) -> float:
    """The forward FLOPs per token that torch's FLOP counter sees in our GPT on the CPU.

    Table 1's rows less two: the embedding is a gather (no multiply-adds), and the fused
    attention kernel (scaled_dot_product_attention) is not counted by the FLOP counter on CPU,
    so the mask row is missing too. What remains are the weight matrices and the de-embedding.
    """
    t = C_forward_table(s)
    return float(t["attention: QKV"] + t["attention: project"] + t["feed-forward"] + t["de-embed"])


def C_train(N: float, tokens: float) -> float:
    """Training compute C = 6 N B S = 6 N D (forward and backward; Kaplan et al. 2020, §2.1)."""
    return 6.0 * N * tokens


def count(s: Shape) -> dict[str, float]:
    """All the counts of one shape, JSON-ready."""
    n = N(s)
    return {
        **asdict(s),
        "N": n,
        "N_embedding": N_embedding(s),
        "N_total": N_total(s),
        "C_forward": C_forward(s),
        "C_forward_exact": C_forward_exact(s),
        "C_forward_counted": C_forward_counted(s),
        "share_missed_by_2N": 1.0 - 2 * n / C_forward_exact(s),
    }


# ---------------------------------------------------------------------------------------------
# Shapes at a fixed size
# ---------------------------------------------------------------------------------------------
HEAD_SIZE = 32  # channels a head: RunConfig's default, so that its n_head is the one chosen here
COUNTS = ("N", "N_total")
_non_embedding = N  # the count N(shape), for the function below whose argument is also called N


def shapes_at_fixed_N(N: float, depths: Iterable[int], *, head_size: int = HEAD_SIZE, n_ctx: int = 128,
                      vocab: int = 4096, count: str = "N") -> list[dict[str, Any]]:
    """For each depth, the (n_layer, d_model, n_head) whose parameter count is nearest N, d_model a multiple of head_size.

    `count` "N": the non-embedding count of flops.N (12 n_layer d_model^2 at d_ff = 4 d_model;
    Kaplan et al. 2020, Table 1); "N_total": with the embeddings (flops.N_total, as Petty et al.
    2024 hold their models' sizes). Each shape reports the count it reaches, N and N_total, and the
    relative miss (`rel_error`): d_model moves in steps of head_size, so a deep model at a small N
    can miss by tens of percent.
    """
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, not {count!r}")
    if not (N > 0 and math.isfinite(N)):
        raise ValueError(f"the fixed N must be positive, not {N}")
    if head_size < 1:
        raise ValueError(f"head_size must be positive, not {head_size}")
    depths = list(depths)
    if not depths:
        raise ValueError("no depths given")
    out = []
    for n_layer in depths:
        if int(n_layer) != n_layer or n_layer < 1:
            raise ValueError(f"depths must be positive integers, not {n_layer!r}")
        n_layer = int(n_layer)
        k_max = int(math.sqrt(N / (12 * n_layer)) / head_size) + 2  # one step past the non-embedding solution
        best = None
        for k in range(1, k_max + 1):
            s = Shape(n_layer, k * head_size, n_ctx, vocab)
            got = _non_embedding(s) if count == "N" else N_total(s)
            if best is None or abs(got - N) < abs(best[1] - N):
                best = (s, got)
        s, got = best
        out.append(dict(n_layer=n_layer, d_model=s.d_model, n_head=s.d_model // head_size, head_size=head_size,
                        N=_non_embedding(s), N_total=N_total(s), target=float(N), count=count,
                        rel_error=got / N - 1))
    return out
