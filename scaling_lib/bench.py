"""Training throughput against the machine's measured matmul peak, and against a plain PyTorch loop.

`bench_shapes` times the project's real training step (`train._train_step`: AdamW, gradient
clipping) on random tokens, once with each output-layer strategy (model.HEADS), converts tokens/s
to FLOP/s with the exact per-token count (3x the forward of Kaplan's Table 1, embedding and
de-embedding included), and divides by the peak of a large square `torch.mm` of the same dtype
measured just before. A naive GPT of the same shape, written as one would without care (stock
`nn.TransformerEncoderLayer`, full logits, default AdamW), gives the baseline the issue asks us to
be at least as fast as. The variants of one shape and dtype (each strategy, and the plain loop for
fp32) are timed step by step in turn, A B C D A B C D ..., and their median step times compared, so
that a drift in the machine's speed falls on all of them alike. The row's headline figures
(`tokens_per_s`, `speedup_vs_baseline`) are those of the strategy that `head.choose_head` picks for
the shape, measured afresh (not from the cache), as a run starting now would pick it.

Numbers taken while other work loads the cores are low (2-5x on the shared 2-core machine), so the
load average at the start is reported with them.
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import sys
import time
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import flops
from .config import RunConfig
from .plans import LADDER_CPU
from .data import sample_batch
from .head import choose_head
from .model import HEADS, build_model
from .train import _optimizer, _train_step

DEFAULT_SHAPES = (*LADDER_CPU, (6, 384))  # the ladder, plus one shape at d_model >= 384 (the issue)
PEAK_SIZES = (1024, 1536, 2048)  # large enough to saturate the matmul kernels, small enough to take ~1 s
PEAK_REPS = 3
WARMUP_STEPS = 2  # the first steps allocate buffers and optimizer state
RANDOM_TOKENS = 1 << 20
DTYPES = ("fp32", "bf16")
_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# The matmul peak
# ---------------------------------------------------------------------------------------------
def matmul_peak(dtype: str = "fp32", *, sizes: Sequence[int] = PEAK_SIZES, reps: int = PEAK_REPS) -> float:
    """The best FLOP/s of square torch.mm over the given sizes and repetitions, 2 n^3 / t."""
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n).to(_TORCH_DTYPE[dtype]) for _ in range(2))
        out = torch.empty(n, n, dtype=a.dtype)
        torch.mm(a, b, out=out)  # warm-up: the first call packs and allocates
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
    return best


# ---------------------------------------------------------------------------------------------
# The baseline: a GPT of the same shape written without care
# ---------------------------------------------------------------------------------------------
class PlainGPT(nn.Module):
    """Stock pre-LN encoder layers under a causal mask, full (B, T, V) logits, tied de-embedding."""

    def __init__(self, vocab: int, n_ctx: int, n_layer: int, d_model: int, n_head: int, d_ff: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(n_ctx, d_model)
        # dropout 0 so that both models do the same work; no nn.TransformerEncoder (its nested-tensor
        # fast path is for inference only and warns with norm_first)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_head, d_ff, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as ours: the same parameters and FLOPs

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        mask = nn.Transformer.generate_square_subsequent_mask(T)
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.blocks:
            x = block(x, src_mask=mask)
        logits = self.head(self.ln_f(x))  # (B, T, V), all at once
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def _plain_step_fn(cfg: RunConfig, tokens: np.ndarray, rng: np.random.Generator):
    """One step of the plain loop: default AdamW, the same batch sampling and gradient clipping as ours."""
    model = PlainGPT(cfg.vocab, cfg.n_ctx, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_ff)
    opt = torch.optim.AdamW(model.parameters())

    def step() -> float:
        batch = torch.from_numpy(sample_batch(tokens, cfg.batch_size, cfg.n_ctx, rng))
        loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss.item()

    return step


def _our_step_fn(cfg: RunConfig, tokens: np.ndarray, rng: np.random.Generator, head: str | None = None):
    """One step of the project's real training loop (train._train_step), with the given output-layer strategy."""
    device = torch.device("cpu")
    model = build_model(cfg).to(device)
    if head is not None:
        model.head = head
    opt = _optimizer(model, cfg, device)
    return lambda: _train_step(model, opt, cfg, device, cfg.lr, tokens, rng)


def _head_step_fn(head: str):
    return lambda cfg, tokens, rng: _our_step_fn(cfg, tokens, rng, head)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def _time_interleaved(variants: dict[str, tuple[Any, RunConfig]], tokens: np.ndarray, *, steps: int,
                      warmup: int) -> dict[str, dict[str, float]]:
    """Median step time of each variant (name: (make_step, cfg)), their steps taken in turn, A B C A B C ...

    Each variant has its own model, optimizer and data order (seeded alike); the order of the
    variants is reversed every other round so that none always follows the same one.
    """
    fns = {}
    for name, (make_step, cfg) in variants.items():
        torch.manual_seed(cfg.seed)
        fns[name] = make_step(cfg, tokens, np.random.default_rng(cfg.seed))
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(steps):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()  # returns a Python float: the step has finished when it returns
            times[n].append(time.perf_counter() - t0)
    del fns
    gc.collect()  # free the models and optimizer state before the next measurement
    out = {}
    for n, ts in times.items():
        cfg = variants[n][1]
        med = float(np.median(ts))
        out[n] = dict(tokens_per_s=cfg.tokens_per_step / med, s_per_step=med, s_per_step_min=min(ts),
                      s_per_step_max=max(ts))
    return out


def _with_flops(timing: dict[str, float], cfg: RunConfig, peak: float) -> dict[str, float]:
    """Add achieved FLOP/s (exact count and 6N) and their share of the peak."""
    per_token = 3 * flops.C_forward_exact(flops.Shape.of(cfg))
    achieved = timing["tokens_per_s"] * per_token
    achieved_6n = timing["tokens_per_s"] * 6 * cfg.N
    return dict(timing, flops=achieved, share_of_peak=achieved / peak,
                flops_6N=achieved_6n, share_of_peak_6N=achieved_6n / peak)


@contextlib.contextmanager
def _num_threads(n: int):
    """torch's intra-op threads set to n (0: every core this process may use), restored afterwards."""
    before = torch.get_num_threads()
    if n <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _config(n_layer: int, d_model: int, *, vocab: int, n_ctx: int, batch_size: int, dtype: str) -> RunConfig:
    tokenizer = "byte" if vocab == 256 else f"bpe{vocab}"
    return RunConfig(sweep="bench", n_layer=n_layer, d_model=d_model, n_ctx=n_ctx, tokenizer=tokenizer,
                     batch_size=batch_size, dtype=dtype)


def _dtypes(dtypes: str | Iterable[str]) -> tuple[str, ...]:
    out = DTYPES if dtypes == "both" else ((dtypes,) if isinstance(dtypes, str) else tuple(dtypes))
    for d in out:
        if d not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES} or 'both', not {d!r}")
    if not out:
        raise ValueError("no dtype to benchmark")
    return out


def _max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------
def bench_shapes(shapes: Iterable[tuple[int, int]] | None = None, *, vocab: int = 4096, n_ctx: int = 128,
                 batch_size: int = 32, steps: int = 10, threads: int = 0,
                 dtypes: str | Iterable[str] = DTYPES, baseline: bool = True, warmup: int = WARMUP_STEPS,
                 peak_sizes: Sequence[int] = PEAK_SIZES, peak_reps: int = PEAK_REPS,
                 progress: bool = True) -> dict[str, Any]:
    """Peak matmul FLOP/s, and our training step's (and the plain loop's) throughput for each (n_layer, d_model)."""
    shapes = [tuple(s) for s in (DEFAULT_SHAPES if shapes is None else shapes)]
    dtypes = _dtypes(dtypes)
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be positive and warmup non-negative, not {steps} and {warmup}")
    configs = [{d: _config(L, dm, vocab=vocab, n_ctx=n_ctx, batch_size=batch_size, dtype=d) for d in DTYPES}
               for L, dm in shapes]  # validate every shape before spending minutes on the first
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=max(RANDOM_TOKENS, 4 * (n_ctx + 1)), dtype=np.uint16)

    def say(msg: str) -> None:
        if progress:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    with _num_threads(threads) as n_threads:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        say(f"matmul peak on {n_threads} thread(s), sizes {list(peak_sizes)}")
        # the dtypes asked for only: without AMX or AVX512-BF16 a bf16 peak alone takes minutes
        peak = {f"{d}_flops": matmul_peak(d, sizes=peak_sizes, reps=peak_reps)
                for d in DTYPES if d in dtypes or (baseline and d == "fp32")}
        rows = []
        for (n_layer, d_model), cfgs in zip(shapes, configs):
            cfg = cfgs["fp32"]
            row: dict[str, Any] = dict(n_layer=n_layer, d_model=d_model, n_head=cfg.n_head, d_ff=cfg.d_ff, N=cfg.N,
                                       N_total=flops.N_total(flops.Shape.of(cfg)),
                                       tokens_per_step=cfg.tokens_per_step,
                                       train_flops_per_token=3 * flops.C_forward_exact(flops.Shape.of(cfg)),
                                       train_flops_per_token_6N=6 * cfg.N)
            base = None
            for d in dtypes:
                variants = {h: (_head_step_fn(h), cfgs[d]) for h in HEADS}
                if baseline and d == "fp32":
                    variants["baseline_fp32"] = (_plain_step_fn, cfg)
                say(f"L{n_layer} d{d_model} (N={cfg.N}) {d}: {', '.join(variants)}, interleaved")
                timed = _time_interleaved(variants, tokens, steps=steps, warmup=warmup)
                if "baseline_fp32" in timed:
                    base = timed.pop("baseline_fp32")
                elif baseline and base is None:  # bf16 alone: the fp32 plain loop, interleaved with nothing
                    base = _time_interleaved({"baseline_fp32": (_plain_step_fn, cfg)}, tokens, steps=steps,
                                             warmup=warmup)["baseline_fp32"]
                say(f"L{n_layer} d{d_model} {d}: the head a run would choose (timed afresh)")
                torch.manual_seed(cfg.seed)
                choice = choose_head(build_model(cfgs[d]), cfgs[d], use_cache=False)
                heads = {h: _with_flops(t, cfgs[d], peak[f"{d}_flops"]) for h, t in timed.items()}
                fastest = min(heads, key=lambda h: heads[h]["s_per_step"])
                row[d] = dict(heads[choice["strategy"]], head=choice["strategy"], head_choice=choice, heads=heads,
                              fastest_head=fastest,
                              auto_over_fastest=heads[choice["strategy"]]["s_per_step"] / heads[fastest]["s_per_step"])
            if base is not None:
                row["baseline_fp32"] = _with_flops(base, cfg, peak["fp32_flops"])
                for d in dtypes:
                    row[d]["speedup_vs_baseline"] = row[d]["tokens_per_s"] / base["tokens_per_s"]
                    for t in row[d]["heads"].values():
                        t["speedup_vs_baseline"] = t["tokens_per_s"] / base["tokens_per_s"]
                # like for like (fp32 against fp32) where fp32 was measured
                row["speedup_vs_baseline"] = row["fp32" if "fp32" in dtypes else dtypes[0]]["speedup_vs_baseline"]
            for d in dtypes:
                say(f"L{n_layer} d{d_model} {d}: " + ", ".join(
                    f"{h} {t['s_per_step'] * 1e3:.1f} ms" + (f" ({t['speedup_vs_baseline']:.2f}x)" if base else "")
                    for h, t in row[d]["heads"].items())
                    + (f", plain loop {base['s_per_step'] * 1e3:.1f} ms" if base else "")
                    + f"; chosen {row[d]['head']} ({row[d]['head_choice']['source']})")
            rows.append(row)
    return dict(threads=n_threads, vocab=vocab, n_ctx=n_ctx, batch_size=batch_size, steps=steps, warmup=warmup,
                dtypes=list(dtypes), peak=peak, shapes=rows, max_rss_mb=_max_rss_mb(),
                loadavg_1min_at_start=load, torch=torch.__version__,
                cpu=platform.processor() or platform.machine())


def bench(args) -> dict[str, Any]:
    """The CLI's `bench`: one shape when --n-layer and --d-model are given, else the default ladder."""
    if (args.n_layer is None) != (args.d_model is None):
        raise ValueError("give both --n-layer and --d-model, or neither (the ladder's shapes)")
    shapes = None if args.n_layer is None else [(args.n_layer, args.d_model)]
    return bench_shapes(shapes, vocab=args.vocab, n_ctx=args.n_ctx, batch_size=args.batch_size, steps=args.steps,
                        threads=args.threads, dtypes=args.dtype)
