"""Which output-layer strategy (model.HEADS) a run trains with, chosen by timing them on this machine.

The checkpointed, chunked cross-entropy ("chunked") recomputes the vocab-sized logits in the
backward pass: it paid where matrix products are cheap (an Intel CPU with AMX) and cost 10% of a
step at the ladder's largest size on an AMD EPYC without AMX. Which strategy is fastest depends on
the shape, the batch, the dtype, the thread count and the CPU, so `choose_head` times them for the
run's exact shape: a forward and backward pass of each on random tokens (the optimizer step is the
same for all and left out), interleaved A B C A B C ..., the median per strategy, the fastest
taken. The result is cached per machine and shape in `cache_dir()/head_choice.json`, so later runs
of the same shape do not re-time; delete the file to re-measure.

The strategies are the same math to float tolerance, so the choice is provenance, not identity: it
never enters `RunConfig` or its key, and the run's record says which strategy ran
(`provenance.head`). SCALING_LIB_HEAD=chunked|chunked_nockpt|plain pins it (tests, determinism
checks, reproducing a stored run exactly); auto (the default) measures. Off the CPU nothing is
timed and the model keeps DEFAULT_HEAD, as before.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from .config import RunConfig
from .data import cache_dir
from .model import DEFAULT_HEAD, HEADS, LanguageModel

ENV = "SCALING_LIB_HEAD"
AUTO = "auto"
CACHE_FILE = "head_choice.json"
CACHE_VERSION = 1
MIN_ROUNDS = 5  # rounds of one pass per strategy, at least this many (3 mis-picked under load) ...
MAX_ROUNDS = 15  # ... and more, up to this many, while the timing has taken less than TIME_BUDGET_S
TIME_BUDGET_S = 4.0
WARMUP = 1  # untimed passes before the rounds (the first allocates gradients and initialises kernels)


def requested() -> str:
    """The strategy SCALING_LIB_HEAD asks for: one of HEADS, or 'auto' (the default)."""
    value = os.environ.get(ENV, "").strip().lower() or AUTO
    if value != AUTO and value not in HEADS:
        raise ValueError(f"{ENV} must be one of {(AUTO, *HEADS)}, not {value!r}")
    return value


def set_head(model: LanguageModel, head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, not {head!r}")
    model.head = head


def choose_head(model: LanguageModel, cfg: RunConfig, device: torch.device | str = "cpu", *,
                use_cache: bool = True, heads: Iterable[str] = HEADS) -> dict[str, Any]:
    """Set `model.head` to the strategy this run should train with, and return what to record of it.

    The returned dict (JSON-ready) has `strategy`, `source` ('env', 'cached', 'measured' or
    'default' off the CPU), and, when measured or cached, the median seconds of a forward and
    backward pass per strategy (`s_per_pass`) and the cache key (`machine`, `shape`).
    """
    device = torch.device(device)
    want = requested()
    if want != AUTO:
        info: dict[str, Any] = dict(strategy=want, source="env", requested=want)
    elif device.type != "cpu":
        info = dict(strategy=DEFAULT_HEAD, source="default", requested=AUTO,
                    reason=f"not measured on {device.type}")
    else:
        machine, shape = machine_key(), shape_key(cfg)
        key = f"{machine} | {shape}"
        heads = tuple(heads)
        cached = _read_cache().get(key) if use_cache else None
        if cached and cached.get("strategy") in heads and set(cached.get("s_per_pass", {})) >= set(heads):
            info = dict(cached, source="cached", requested=AUTO)
        else:
            t0 = time.perf_counter()
            times = time_heads(model, cfg, device, heads=heads)
            medians = {h: statistics.median(ts) for h, ts in times.items()}
            best = min(medians, key=medians.get)
            info = dict(strategy=best, s_per_pass=medians, rounds=len(times[best]), machine=machine, shape=shape,
                        threads=torch.get_num_threads(), timing_s=time.perf_counter() - t0,
                        measured=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            if use_cache:
                _write_cache(key, info)
            info = dict(info, source="measured", requested=AUTO)
    set_head(model, info["strategy"])
    return info


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def time_heads(model: LanguageModel, cfg: RunConfig, device: torch.device | str = "cpu", *,
               heads: Iterable[str] = HEADS, min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS,
               budget_s: float = TIME_BUDGET_S, warmup: int = WARMUP) -> dict[str, list[float]]:
    """Seconds of one forward and backward pass per strategy, interleaved, on random tokens of the run's batch.

    The model is left as it was: parameters untouched (no optimizer step), gradients, head,
    train/eval mode and torch's random state restored.
    """
    device = torch.device(device)
    heads = tuple(heads)
    for h in heads:
        if h not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {h!r}")
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab, (cfg.batch_size, cfg.n_ctx + 1), generator=g).to(device)
    x, y = batch[:, :-1], batch[:, 1:]
    params = list(model.parameters())
    saved = dict(head=model.head, training=model.training, grads=[p.grad for p in params],
                 rng=torch.get_rng_state(),
                 cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None)

    def autocast():
        if cfg.dtype == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def one_pass(head: str) -> float:
        model.head = head
        t0 = time.perf_counter()
        with autocast():
            loss = model(x, y)
        loss.backward()
        float(loss.detach())  # the pass has finished (on any device) when this returns
        seconds = time.perf_counter() - t0
        for p in params:
            p.grad = None
        return seconds

    times: dict[str, list[float]] = {h: [] for h in heads}
    try:
        model.train()
        for p in params:
            p.grad = None
        for i in range(warmup):
            one_pass(heads[i % len(heads)])
        t_start = time.perf_counter()
        for r in range(max_rounds):
            if r >= min_rounds and time.perf_counter() - t_start > budget_s:
                break
            for h in (heads if r % 2 == 0 else heads[::-1]):  # A B C, C B A, ...: no strategy always first
                times[h].append(one_pass(h))
    finally:
        model.head = saved["head"]
        model.train(saved["training"])
        for p, grad in zip(params, saved["grads"]):
            p.grad = grad
        torch.set_rng_state(saved["rng"])
        if saved["cuda_rng"] is not None:  # what dropout draws from on a GPU
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
    return times


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------
def machine_key() -> str:
    """What the timing depends on besides the shape: host, CPU, its vector extensions, torch, threads."""
    return (f"{platform.node()} / {_cpu_name()} / {torch.backends.cpu.get_cpu_capability()}"
            f"{' AMX' if _has_amx() else ''} / torch {torch.__version__} / {torch.get_num_threads()} threads")


def shape_key(cfg: RunConfig) -> str:
    """The run's shape, batch and dtype (what the output layer's cost depends on), not its identity."""
    layers = f"L{cfg.n_layer} d{cfg.d_model}" + ("" if cfg.arch == "lstm" else f" h{cfg.n_head} ff{cfg.d_ff}")
    return f"{cfg.arch} {layers} ctx{cfg.n_ctx} V{cfg.vocab} B{cfg.batch_size} {cfg.dtype}"


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return data.get("choices", {})


def _write_cache(key: str, info: dict[str, Any]) -> None:
    """Add one entry; written whole to a temporary file and renamed, so readers never see half a file.

    Two processes writing at once may lose one entry (the last rename wins): it is re-measured later.
    """
    path = cache_path()
    choices = _read_cache()
    choices[key] = info
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{CACHE_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(dict(version=CACHE_VERSION, choices=choices), f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _has_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
