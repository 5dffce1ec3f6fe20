"""The architecture registry: per architecture, how to build the model, its N, and its exact
forward FLOPs per token.

`train`, `flops` users and `bench` ask the registry instead of branching on a name; a new
architecture (a recurrent transformer, say) is one more `register` call. `build_model` builds a config's
model, and the counts against its tensors (`params_counted`, `measured_forward_flops`) check the formulas.
No torch at import: the analysis chapters count without a model. A config is read by duck typing (n_layer, d_model,
d_ff, n_ctx, n_head, vocab), so this module does not import `config`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from . import flops


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[Any], Any]  # config -> model (a LanguageModel)
    N: Callable[[Any], int]  # config -> non-embedding parameters as Kaplan counts them
    forward_flops: Callable[[Any], float]  # config -> forward FLOPs per token, embeddings and attention included
    describe: str = ""
    # config -> how often each of the N counted parameters is used per token; None: once, and the
    # architecture takes no n_recur
    reuse: Callable[[Any], int] | None = None


REGISTRY: dict[str, Arch] = {}


def register(arch: Arch) -> Arch:
    if arch.name in REGISTRY:
        raise ValueError(f"architecture {arch.name!r} is registered already")
    REGISTRY[arch.name] = arch
    return arch


def get(name: str) -> Arch:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(REGISTRY)}") from None


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def train_flops_per_token(cfg) -> float:
    """Training FLOPs per token: three times the exact forward (the backward costs two)."""
    return 3 * get(cfg.arch).forward_flops(cfg)


def uses(cfg) -> int:
    """How often each counted parameter is used per token: n_recur where the blocks are reused, else 1."""
    reuse = get(cfg.arch).reuse
    return 1 if reuse is None else int(reuse(cfg))


def build_model(cfg):
    """The model a config describes (a `model.LanguageModel`), built by its architecture's entry."""
    return get(cfg.arch).build(cfg)


# --- against the instantiated model (torch is imported by these alone) ---
def params_counted(cfg) -> tuple[int, int]:
    """(non-embedding, total) parameters of the model a RunConfig builds, counted from its tensors."""
    m = build_model(cfg)
    return m.n_params(non_embedding=True), m.n_params(non_embedding=False)


def measured_forward_flops(cfg, batch_size: int = 1) -> float:
    """Forward FLOPs per token of the instantiated model, counted by torch.utils.flop_counter (logits included)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    m = build_model(cfg).eval()
    idx = torch.zeros(batch_size, cfg.n_ctx, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(idx)  # logits (B, T, V): the de-embedding is counted
    return counter.get_total_flops() / (batch_size * cfg.n_ctx)


def C_train(cfg, tokens: float) -> float:
    """C = 6 N D with a reused parameter counted at every use, as Kaplan compares recurrent
    transformers "accounting for reuse" (App. D.2, Fig. 17); 6 N D itself for the others."""
    return flops.C_train(cfg.N * uses(cfg), tokens)


# --- the transformer (Kaplan et al. 2020, Table 1) --------------------------------------------
def _gpt_build(cfg):
    from .model import GPT

    return GPT(cfg.vocab, cfg.n_ctx, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff, cfg.dropout)


register(Arch(
    name="gpt",
    build=_gpt_build,
    N=lambda c: flops.N(flops.Shape.of(c)),
    forward_flops=lambda c: flops.C_forward_exact(flops.Shape.of(c)),
    describe="pre-LN decoder-only transformer, learned positions, tied de-embedding",
))


# --- the recurrent transformer (Kaplan App. D.2, Fig. 17; Dehghani et al. 2018) ---------------
def _ut_build(cfg):
    from .model import RecurrentGPT

    return RecurrentGPT(cfg.vocab, cfg.n_ctx, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff, cfg.n_recur, cfg.dropout)


def unrolled_shape(cfg) -> flops.Shape:
    """The shape a token's forward pass goes through: n_layer n_recur blocks (the reused ones at each use)."""
    return replace(flops.Shape.of(cfg), n_layer=cfg.n_layer * cfg.n_recur)


register(Arch(
    name="ut",
    build=_ut_build,
    N=lambda c: flops.N(flops.Shape.of(c)),  # the shared blocks counted once
    forward_flops=lambda c: flops.C_forward_exact(unrolled_shape(c)),  # and their compute at every use
    reuse=lambda c: c.n_recur,
    describe="recurrent transformer: the gpt's stack of n_layer blocks applied n_recur times with the same parameters",
))


# --- the LSTM (Kaplan §3.2.1, Fig. 7) ---------------------------------------------------------
def _lstm_build(cfg):
    from .model import LSTMLM

    return LSTMLM(cfg.vocab, cfg.n_layer, cfg.d_model)


def _lstm_N(c) -> int:
    return 8 * c.n_layer * c.d_model**2  # four gates, input and recurrent weights


register(Arch(
    name="lstm",
    build=_lstm_build,
    N=_lstm_N,
    # two FLOPs a weight (the gates), and the tied embedding read and de-embedding written
    forward_flops=lambda c: 2 * _lstm_N(c) + 2 * c.d_model * c.vocab,
    describe="stacked LSTM, tied embeddings",
))
