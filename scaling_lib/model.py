"""The models: a pre-LN decoder-only transformer (GPT), its recurrent variant (RecurrentGPT, Kaplan
App. D.2) and an LSTM language model (Kaplan §3.2.1).

None knows anything of configs, data, training or the store: `arch.build_model` builds one from a
config. The transformers drop activations (`dropout`,
as GPT-2: after the embeddings, on the attention weights, and on each block's two outputs to the
residual stream) in training mode only; at dropout 0 they compute exactly what they did before it
existed, and draw nothing from torch's random state. Both take token ids (B, T) and return the
mean next-token cross-entropy, or the per-position losses. At our small widths the vocab-sized
output layer outweighs all the blocks, and how its cross-entropy is computed under autograd (the
model's `head`, one of HEADS) decides the speed of a training step:

- "chunked": CE_CHUNK tokens at a time under activation checkpointing, the full (B*T, vocab)
  logits never held; it recomputes each chunk's logits in the backward pass, which paid (1.2-1.9x)
  on an Intel CPU with AMX, where matrix products are cheap;
- "chunked_nockpt": the same chunks without checkpointing (cache-sized pieces, no recomputation,
  but every chunk's log-softmax kept for the backward pass, as "plain" keeps the whole one);
- "plain": the whole logits at once, as a plain loop would.

All three are the same math (to float tolerance); `head.choose_head` picks the fastest for a
run's shape, batch, dtype and machine by timing them. Without gradients (evaluation) the loss is
always computed in chunks, which then costs nothing extra.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

INIT_STD = 0.02
CE_CHUNK = 256  # tokens per cross-entropy chunk
HEADS = ("chunked", "chunked_nockpt", "plain")  # how the training loss is computed (see above)
DEFAULT_HEAD = "chunked"  # of a model that nobody chose a head for


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)  # on the output, before it joins the residual stream

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, h, T, c)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        # the dropout last, so that the weights keep their names (ff.0, ff.2) and the init finds them
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.ff(self.ln_2(x))


class LanguageModel(nn.Module):
    """Shared head: tied embedding/de-embedding and the cross-entropy, computed as `head` says."""

    wte: nn.Embedding
    head: str = DEFAULT_HEAD  # one of HEADS; set by head.choose_head (provenance, not the run's identity)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        raise NotImplementedError

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, per_position: bool = False):
        """Logits (B, T, V) without targets; else the mean loss, or (T,) mean loss per position."""
        h = self.hidden(idx)
        if targets is None:
            return h @ self.wte.weight.T
        h, t = h.reshape(-1, h.size(-1)), targets.reshape(-1)
        loss = head_losses(h, self.wte.weight, t, self.head if torch.is_grad_enabled() else "chunked_nockpt")
        if per_position:
            return loss.view(targets.shape).mean(0)
        return loss.mean()

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameters counted as Kaplan does: without embeddings, biases and layer norms when non_embedding."""
        if not non_embedding:
            return sum(p.numel() for p in self.parameters())
        return sum(p.numel() for n, p in self.named_parameters() if _is_counted_weight(n, p))


def head_losses(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, head: str = DEFAULT_HEAD) -> torch.Tensor:
    """The (B*T,) cross-entropies of hidden states h (B*T, C) against targets t under the tied de-embedding w."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, not {head!r}")
    if head == "plain":
        return _ce(h, w, t)
    chunk = CE_CHUNK if h.device.type == "cpu" else t.numel()  # a GPU is faster with the whole logits at once
    ckpt = head == "chunked" and torch.is_grad_enabled()
    losses = []
    for i in range(0, t.numel(), chunk):
        hc, tc = h[i : i + chunk], t[i : i + chunk]
        losses.append(checkpoint(_ce, hc, w, tc, use_reentrant=False) if ckpt else _ce(hc, w, tc))
    return torch.cat(losses)


def _ce(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ w.T).float(), t, reduction="none")


def _is_counted_weight(name: str, p: torch.Tensor) -> bool:
    """Kaplan's N: matrices of the blocks (attention, feed-forward, LSTM gates), no embeddings/biases/norms."""
    if name.startswith(("wte", "wpe")) or p.dim() < 2:
        return False
    return True


class GPT(LanguageModel):
    """Pre-LN decoder-only transformer; learned positions; tied de-embedding; dropout (as GPT-2)."""

    def __init__(self, vocab: int, n_ctx: int, n_layer: int, d_model: int, n_head: int, d_ff: int,
                 dropout: float = 0.0):
        super().__init__()
        self.n_ctx = n_ctx
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(n_ctx, d_model)
        self.drop = nn.Dropout(dropout)  # on the embeddings
        self.blocks = nn.ModuleList(Block(d_model, n_head, d_ff, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(_init)
        # scale the residual projections by depth (GPT-2)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "ff.2.weight")):
                nn.init.normal_(p, 0.0, INIT_STD / math.sqrt(2 * n_layer))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.n_ctx:
            raise ValueError(f"sequence of {T} tokens is longer than n_ctx {self.n_ctx}")
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)


class RecurrentGPT(GPT):
    """The GPT with its stack of n_layer blocks applied n_recur times with the same parameters: a
    recurrent transformer (Dehghani et al. 2018, Universal Transformers, without their adaptive
    halting; Kaplan et al. 2020, App. D.2, Fig. 17). n_recur = 1 is the GPT itself, parameter for
    parameter under the same seed."""

    def __init__(self, vocab: int, n_ctx: int, n_layer: int, d_model: int, n_head: int, d_ff: int, n_recur: int,
                 dropout: float = 0.0):
        super().__init__(vocab, n_ctx, n_layer, d_model, n_head, d_ff, dropout)
        self.n_recur = n_recur
        # the residual projections scaled by the depth the stream goes through, n_layer n_recur (as
        # GPT-2 scales by n_layer); rescaled rather than drawn again, so the seed draws what the GPT draws
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(("proj.weight", "ff.2.weight")):
                    p.mul_(1 / math.sqrt(n_recur))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.n_ctx:
            raise ValueError(f"sequence of {T} tokens is longer than n_ctx {self.n_ctx}")
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
        for _ in range(self.n_recur):
            for block in self.blocks:
                x = block(x)
        return self.ln_f(x)


class LSTMLM(LanguageModel):
    """A stacked LSTM language model with tied embeddings (Kaplan §3.2.1, Fig. 7)."""

    def __init__(self, vocab: int, n_layer: int, d_model: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.lstm = nn.LSTM(d_model, d_model, num_layers=n_layer, batch_first=True)
        self.ln_f = nn.LayerNorm(d_model)
        nn.init.normal_(self.wte.weight, 0.0, INIT_STD)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.wte(idx))  # (B, T, C)
        return self.ln_f(h)


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, INIT_STD)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
