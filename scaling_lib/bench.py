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

`latency` answers Petty et al. (2024)'s point that at a fixed parameter count deeper models are
slower: seconds per training step and per generated token (batch 1 and a batch) of each shape,
medians and spread over repeats, the shapes timed in turn; `shapes_at_fixed_N` sizes d_model to
hold N fixed across depths, `fit_latency` fits latency linearly in n_layer, and `depth_latency`
puts the three together (the CLI's `bench --depths ... --fixed-n N`).
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import flops
from .flops import HEAD_SIZE, shapes_at_fixed_N  # noqa: F401 (its callers import them from here)
from .config import RunConfig
from .plans import LADDER_CPU
from .data import sample_batch
from .head import choose_head
from .arch import build_model
from .model import DEFAULT_HEAD, HEADS
from .train import _autocast, _device_name, _optimizer, _train_step

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

def _random_tokens(vocab: int, n_ctx: int) -> np.ndarray:
    """Random token ids to time on (seeded): what the model sees does not change its speed."""
    return np.random.default_rng(0).integers(0, vocab, size=max(RANDOM_TOKENS, 4 * (n_ctx + 1)), dtype=np.uint16)


def _sayer(progress: bool) -> Callable[[str], None]:
    """A function that prints 'bench: msg' on stderr when `progress`, and does nothing otherwise."""
    def say(msg: str) -> None:
        if progress:
            print(f"bench: {msg}", file=sys.stderr, flush=True)
    return say

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


def _our_step_fn(cfg: RunConfig, tokens: np.ndarray, rng: np.random.Generator, head: str | None = None,
                 chosen: dict[str, Any] | None = None):
    """One step of the project's real training loop (train._train_step), with the given output-layer strategy.

    head "auto": the strategy head.choose_head picks for the run, as a run starting now would (its
    record goes into `chosen`); None: the model's default.
    """
    device = torch.device(cfg.device)
    model = build_model(cfg).to(device)
    if head == "auto":
        info = choose_head(model, cfg, device)
        if chosen is not None:
            chosen.update(info)
    elif head is not None:
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
    # each step returns a Python float: the step has finished (on a GPU too) when it returns
    times = _interleaved(fns, repeats=steps, warmup=warmup)
    del fns
    gc.collect()  # free the models and optimizer state before the next measurement
    out = {}
    for n, ts in times.items():
        cfg = variants[n][1]
        med = float(np.median(ts))
        out[n] = dict(tokens_per_s=cfg.tokens_per_step / med, s_per_step=med, s_per_step_min=min(ts),
                      s_per_step_max=max(ts), s_per_step_q25=float(np.percentile(ts, 25)),
                      s_per_step_q75=float(np.percentile(ts, 75)))
    return out


def _interleaved(fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds of `repeats` calls of each function, taken in turn A B C A B C ..., after `warmup` untimed rounds.

    The order is reversed every other round so that none always follows the same one. Each call
    must have finished its work when it returns (synchronise a GPU inside it).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def _spread(ts: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median, quartiles and extremes of the times ts (each divided by `scale`), and how many."""
    a = np.asarray(ts, float) / scale
    return dict(median=float(np.median(a)), q25=float(np.percentile(a, 25)), q75=float(np.percentile(a, 75)),
                min=float(a.min()), max=float(a.max()), n=int(a.size))


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


def _config(n_layer: int, d_model: int, *, vocab: int, n_ctx: int, batch_size: int, dtype: str, n_head: int = 0,
            device: str = "cpu") -> RunConfig:
    tokenizer = "byte" if vocab == 256 else f"bpe{vocab}"
    return RunConfig(sweep="bench", n_layer=n_layer, d_model=d_model, n_ctx=n_ctx, tokenizer=tokenizer,
                     batch_size=batch_size, dtype=dtype, n_head=n_head, device=device)


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
    tokens, say = _random_tokens(vocab, n_ctx), _sayer(progress)

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


# ---------------------------------------------------------------------------------------------
# Latency against depth at a fixed parameter count (Petty et al. 2024: deeper is slower)
# ---------------------------------------------------------------------------------------------
GEN_TOKENS = 32  # tokens generated per timed repeat
GEN_BATCHES = (1, 32)  # one sequence (latency), and a batch (throughput per sequence)
GEN_PROMPT = 16  # prompt tokens before the generated ones
LATENCY_REPEATS = 5
MAX_REL_ERROR = 0.1  # a shape further than this from the fixed N is warned about


@dataclass(frozen=True, eq=False)
class LatencyFit:
    """Latency = intercept + slope n_layer by least squares, its R^2 and its residuals (seconds)."""

    slope: float
    intercept: float
    r2: float  # NaN where every latency is the same
    residuals: np.ndarray = field(repr=False)
    n_layer: np.ndarray = field(repr=False)

    def predict(self, n_layer) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(n_layer, float)

    @property
    def ratio(self) -> float:
        """The fitted latency at the largest depth over that at the smallest (Petty et al.'s 'x times slower')."""
        lo, hi = self.predict([self.n_layer.min(), self.n_layer.max()])
        return float(hi / lo) if lo > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return dict(slope=self.slope, intercept=self.intercept, r2=None if math.isnan(self.r2) else self.r2,
                    ratio=None if math.isnan(self.ratio) else self.ratio, residuals=self.residuals.tolist())


def fit_latency(n_layer, seconds) -> LatencyFit:
    """Fit latency linearly in depth (Petty et al. 2024, Fig. 1: 'a strongly-linear relationship')."""
    x, y = np.asarray(n_layer, float), np.asarray(seconds, float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"n_layer and seconds must be 1-D and of one length, not {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("n_layer and seconds must be finite")
    if len(np.unique(x)) < 2:
        raise ValueError("a line in depth needs at least two distinct depths")
    M = np.column_stack([np.ones_like(x), x])
    (intercept, slope), *_ = np.linalg.lstsq(M, y, rcond=None)
    resid = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if np.ptp(y) > 0 else math.nan
    return LatencyFit(slope=float(slope), intercept=float(intercept), r2=r2, residuals=resid, n_layer=x)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate_fn(cfg: RunConfig, batch: int, k: int, prompt: int) -> Callable[[], None]:
    """Greedy generation of k tokens after a random prompt, batch sequences at once.

    The model keeps no key-value cache, so each new token runs the whole context so far (its last
    n_ctx tokens) through the model, as a plain forward pass of `model.hidden` would; only the last
    position's logits are computed.
    """
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    idx0 = torch.randint(0, cfg.vocab, (batch, prompt), generator=g).to(device)

    @torch.no_grad()
    def run() -> None:
        idx = idx0
        for _ in range(k):
            with _autocast(cfg, device):
                h = model.hidden(idx[:, -cfg.n_ctx:])[:, -1]  # (B, C)
                logits = h @ model.wte.weight.T  # (B, V)
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
        _sync(device)

    return run


def latency(shapes: Iterable[Sequence[int] | dict[str, int]], *, vocab: int = 4096, n_ctx: int = 128,
            batch_size: int = 32, dtype: str = "fp32", device: str = "cpu", threads: int = 0,
            gen_tokens: int = GEN_TOKENS, gen_batches: Sequence[int] = GEN_BATCHES, prompt: int = GEN_PROMPT,
            repeats: int = LATENCY_REPEATS, warmup: int = 1, head: str | None = "auto",
            progress: bool = True) -> dict[str, Any]:
    """Seconds per training step and per generated token of each shape, medians and spread over repeats.

    `shapes`: (n_layer, d_model[, n_head]) or dicts with those keys (as `shapes_at_fixed_N` gives).
    Training: the project's step (train._train_step, AdamW, batch_size sequences of n_ctx tokens),
    with the output-layer strategy a run would choose (`head` "auto"; or one of model.HEADS).
    Inference: greedy generation of gen_tokens tokens after `prompt` tokens at each of gen_batches
    (see _generate_fn: no key-value cache). Every measurement is repeated `repeats` times after
    `warmup` untimed rounds, the shapes timed in turn (A B C A B C ...) so that a drift of the
    machine's speed falls on all of them alike. Returns the device, torch's thread count and, per
    shape, `train_s_per_step` and, per batch, `s_per_token` (the time of one generation step, which
    gives every sequence of the batch one token), each as median, q25, q75, min, max.
    """
    dtype = _dtypes(dtype)
    if len(dtype) != 1:
        raise ValueError("latency measures one dtype at a time")
    dtype = dtype[0]
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but no CUDA device is available")
    if repeats < 1 or warmup < 0 or gen_tokens < 1 or prompt < 1 or any(b < 1 for b in gen_batches):
        raise ValueError(f"repeats, gen_tokens, prompt and the batches must be positive, warmup non-negative "
                         f"(not {repeats}, {gen_tokens}, {prompt}, {list(gen_batches)}, {warmup})")
    specs = []
    for s in shapes:
        d = dict(s) if isinstance(s, dict) else dict(zip(("n_layer", "d_model", "n_head"), s))
        specs.append((int(d["n_layer"]), int(d["d_model"]), int(d.get("n_head", 0) or 0)))
    if not specs:
        raise ValueError("no shapes to time")
    cfgs = {f"L{L}-d{dm}-h{h}": _config(L, dm, vocab=vocab, n_ctx=n_ctx, batch_size=batch_size, dtype=dtype,
                                      n_head=h, device=device) for L, dm, h in specs}
    tokens, say = _random_tokens(vocab, n_ctx), _sayer(progress)

    with _num_threads(threads) as n_threads:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        chosen: dict[str, dict[str, Any]] = {name: {} for name in cfgs}
        say(f"training steps of {len(cfgs)} shape(s) on {device}, {n_threads} thread(s), interleaved")
        fns = {}
        for name, cfg in cfgs.items():
            torch.manual_seed(cfg.seed)
            fns[name] = _our_step_fn(cfg, tokens, np.random.default_rng(cfg.seed), head, chosen[name])
        train_times = _interleaved(fns, repeats=repeats, warmup=warmup)
        # "auto" records the chosen strategy; a pinned head is the one asked for; None the model's default
        heads = {n: chosen[n].get("strategy") or (head if head in HEADS else DEFAULT_HEAD) for n in cfgs}
        del fns
        gc.collect()
        gen_times = {}
        for b in gen_batches:
            say(f"generation of {gen_tokens} tokens at batch {b}")
            fns = {name: _generate_fn(cfg, b, gen_tokens, prompt) for name, cfg in cfgs.items()}
            gen_times[b] = _interleaved(fns, repeats=repeats, warmup=warmup)
            del fns
            gc.collect()
    rows = []
    for name, cfg in cfgs.items():
        s = flops.Shape.of(cfg)
        rows.append(dict(
            n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head, N=cfg.N, N_total=flops.N_total(s),
            train_s_per_step=_spread(train_times[name]), tokens_per_step=cfg.tokens_per_step,
            head=heads[name],
            generate=[dict(batch=b, tokens=gen_tokens, prompt=prompt, s_per_token=_spread(gen_times[b][name], gen_tokens))
                      for b in gen_batches]))
        say(f"L{cfg.n_layer} d{cfg.d_model}: {rows[-1]['train_s_per_step']['median'] * 1e3:.1f} ms a step; "
            + ", ".join(f"batch {g['batch']} {g['s_per_token']['median'] * 1e3:.2f} ms a token" for g in rows[-1]["generate"]))
    return dict(device=_device_name(torch.device(device)), threads=n_threads, dtype=dtype, vocab=vocab, n_ctx=n_ctx,
                batch_size=batch_size, repeats=repeats, warmup=warmup, torch=torch.__version__,
                loadavg_1min_at_start=load, shapes=rows)


def latency_fits(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`fit_latency` of a `latency` result's medians: the training step, and generation at each batch."""
    rows = result["shapes"]
    L = [r["n_layer"] for r in rows]
    fits = {"train_s_per_step": fit_latency(L, [r["train_s_per_step"]["median"] for r in rows]).to_dict()}
    for i, g in enumerate(rows[0]["generate"]):
        fits[f"generate_batch_{g['batch']}_s_per_token"] = fit_latency(
            L, [r["generate"][i]["s_per_token"]["median"] for r in rows]).to_dict()
    return fits


def depth_latency(N: float, depths: Iterable[int], *, head_size: int = HEAD_SIZE, count: str = "N",
                  **kwargs: Any) -> dict[str, Any]:
    """`latency` of the shapes of `shapes_at_fixed_N(N, depths)`, with the fits of latency against depth."""
    shapes = shapes_at_fixed_N(N, depths, head_size=head_size, n_ctx=kwargs.get("n_ctx", 128),
                               vocab=kwargs.get("vocab", 4096), count=count)
    result = latency(shapes, **kwargs)
    for row, shape in zip(result["shapes"], shapes):
        row.update(target=shape["target"], count=count, rel_error=shape["rel_error"])
    result.update(fixed_N=float(N), count=count, head_size=head_size, warnings=[
        f"n_layer {s['n_layer']}: d_model {s['d_model']} gives {s['count']} = {s['N' if count == 'N' else 'N_total']:,} "
        f"({100 * s['rel_error']:+.0f}% off {N:,.0f}); a smaller --head-size steps closer"
        for s in shapes if abs(s["rel_error"]) > MAX_REL_ERROR])
    for w in result["warnings"]:
        if kwargs.get("progress", True):
            print(f"bench: warning: {w}", file=sys.stderr, flush=True)
    if len({s["n_layer"] for s in shapes}) >= 2:
        result["fits"] = latency_fits(result)
    return result


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} takes integers joined by commas, e.g. 1,2,4, not {text!r}") from None
    if not values:
        raise ValueError(f"{name} is empty")
    return values


def bench(args) -> dict[str, Any]:
    """The CLI's `bench`: one shape when --n-layer and --d-model are given, else the default ladder;
    with --depths and --fixed-n, latency against depth at that fixed N (`depth_latency`)."""
    depths, fixed_n = getattr(args, "depths", None), getattr(args, "fixed_n", None)
    if depths is not None or fixed_n is not None:
        if depths is None or fixed_n is None:
            raise ValueError("give --depths and --fixed-n together")
        if args.n_layer is not None or args.d_model is not None:
            raise ValueError("--depths and --fixed-n choose the shapes: leave out --n-layer and --d-model")
        return depth_latency(fixed_n, _int_list(depths, "--depths"), head_size=args.head_size, count=args.count,
                             vocab=args.vocab, n_ctx=args.n_ctx, batch_size=args.batch_size,
                             dtype="fp32" if args.dtype == "both" else args.dtype, device=args.device,
                             threads=args.threads, gen_tokens=args.gen_tokens,
                             gen_batches=_int_list(args.gen_batches, "--gen-batches"), prompt=args.prompt,
                             repeats=args.steps)
    if (args.n_layer is None) != (args.d_model is None):
        raise ValueError("give both --n-layer and --d-model, or neither (the ladder's shapes)")
    shapes = None if args.n_layer is None else [(args.n_layer, args.d_model)]
    return bench_shapes(shapes, vocab=args.vocab, n_ctx=args.n_ctx, batch_size=args.batch_size, steps=args.steps,
                        threads=args.threads, dtypes=args.dtype)
