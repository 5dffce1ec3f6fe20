"""Device time of a sweep, planned from measured throughput: each run's work, its shape's rate, and
the runs packed into P long-lived processes sharing one device.

Small models are launch-bound on a GPU: their kernels are too short to fill it, so a lone process
leaves it mostly idle, and many processes at once slow each other (the stored GPU runs, 12 processes
on one H200, took 16 to 88 s a 2M-token run). `measure` times each distinct shape of the planned
configs with the training loop's own code (`build_model`, `choose_head`, `train._optimizer`,
`train._train_step` on the run's corpus at the schedule's rate, `train.evaluate` on its validation
windows), a few steps each, on the configs' device where this machine has it (else on its CPU), in
one process and, if asked, with k processes timing it at once. `run_work` counts what a run
computes (the tokens it trains, cooldown branches included, and the tokens its evaluations score),
`plan` turns that into seconds at the measured rates (divided by an assumed device speedup when
they were not measured on the device) and `pack` simulates the local pool: P workers taking the
runs in the sweep's order, each run progressing at its shape's rate for k runs computing at once.
Every number the plan prints is labelled measured or assumed.
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import RunConfig
from .train import cooldown_start, eval_steps

STEPS, WARMUP = 5, 2  # timed training steps a shape, after the warm-up steps (buffers, optimizer state)
EVAL_BATCHES = 4  # batches of validation windows timed for the evaluation rate
# A fresh worker process: spawn, import torch and the library, create a CUDA context. Assumed (the
# plan says so); what a run itself sets up (its model and optimizer) is measured (`setup_s`).
STARTUP_S = 5.0
# P processes sharing one device where their sharing was not measured: each runs at 1 / (1 + c (P - 1))
# of its lone speed; c = 1, no gain from sharing, makes the plan an upper bound.
CONTENTION = 1.0
SCHEMA = 1  # of the `measured` section a plan writes, which --rates reads back


# ---------------------------------------------------------------------------------------------
# What a run computes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Work:
    """What one run computes: tokens trained (the main run and its cooldown branches) and tokens scored."""

    key: str
    sweep: str
    name: str
    N: int
    shape: str
    train_tokens: int
    eval_tokens: int


def shape_of(cfg: RunConfig) -> str:
    """What sets the cost of a step (not the rate, seed or budget): runs of one shape share a measurement."""
    return (f"{cfg.arch} L{cfg.n_layer} d{cfg.d_model} h{cfg.n_head} ff{cfg.d_ff} r{cfg.n_recur} "
            f"ctx{cfg.n_ctx} B{cfg.batch_size} V{cfg.vocab} {cfg.dtype}")


def _scored(split_tokens: int, n_ctx: int, max_tokens: int) -> int:
    """Tokens scored on the windows that data.eval_windows cuts from a split of this many tokens."""
    return max(1, min(max_tokens // n_ctx, (split_tokens - 1) // n_ctx)) * n_ctx


def run_work(cfg: RunConfig, split_tokens: Mapping[str, int], final_eval_tokens: int | None = None) -> Work:
    """Tokens a run trains and scores if it runs to its end (early stopping only shortens it).

    `split_tokens` holds the size of every split the run is scored on: 'val', 'test' and each other
    distribution (any other key but 'train'). Follows train.py: an evaluation at every curve step
    (the validation windows and a quarter as many of each other distribution, and `noise_batches`
    batches for the noise scale, counted as trained tokens: each costs about a step), a cooldown branch
    from `cooldown_start` to each shorter budget, scored on the final windows (evaluation 2) or the
    curve's (1), and the final scores of the validation, test and other splits.
    """
    if final_eval_tokens is None:
        from .train import FINAL_EVAL_TOKENS as final_eval_tokens
    if "val" not in split_tokens or "test" not in split_tokens:
        raise ValueError(f"split_tokens needs 'val' and 'test', not only {', '.join(split_tokens) or 'nothing'}")
    others = [s for s in split_tokens if s not in ("train", "val", "test")]
    T, S = cfg.n_ctx, cfg.steps
    curve = _scored(split_tokens["val"], T, cfg.eval_tokens) + sum(
        _scored(split_tokens[o], T, max(cfg.eval_tokens // 4, T)) for o in others)
    final_val = _scored(split_tokens["val"], T, final_eval_tokens)
    train_steps, branch_evals = S, 0
    for b in cfg.budgets:
        steps = max(1, b // cfg.tokens_per_step)
        train_steps += steps - cooldown_start(cfg, steps)
        branch_evals += final_val if cfg.eval_version >= 2 else _scored(split_tokens["val"], T, cfg.eval_tokens)
    final = final_val + sum(_scored(split_tokens[s], T, final_eval_tokens) for s in ("test", *others))
    n_evals = len(eval_steps(S, cfg.evals_per_decade))
    # the noise scale (noise_batches): a forward and backward pass over a batch, about a step, per batch
    train_steps += n_evals * cfg.noise_batches
    return Work(cfg.key, cfg.sweep, cfg.name, cfg.N, shape_of(cfg), train_steps * cfg.tokens_per_step,
                n_evals * curve + branch_evals + final)


def corpus_splits(cfg: RunConfig) -> dict[str, int]:
    """The size in tokens of every split a run of this config is scored on (from the corpus manifest)."""
    from .data import load_corpus

    corpus = load_corpus(cfg.corpus, cfg.tokenizer)
    files = corpus.manifest["files"]
    return {s: int(files[s]["tokens"]) for s in ("val", "test", *corpus.other)}


# ---------------------------------------------------------------------------------------------
# Measuring the rates
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """One shape's measured speed: training and evaluation tokens/s of a lone process, the seconds a
    run spends setting up its model and optimizer, and, by k, the training tokens/s of each of k
    processes timing it at once."""

    shape: str
    train_tokens_per_s: float
    eval_tokens_per_s: float
    setup_s: float
    shared: dict[int, float] = field(default_factory=dict)

    def share(self, k: int, contention: float = CONTENTION) -> tuple[float, str]:
        """Each of k processes' speed as a fraction of a lone one's, and whether it was measured,
        interpolated between measurements (of the k processes' total) or assumed (`contention`).

        A process sharing the device is never faster than a lone one: a measured share above 1 is
        timing noise (the lone measurement caught a slower moment), and counts as 1."""
        if k <= 1:
            return 1.0, "measured"
        if k in self.shared:
            return min(1.0, self.shared[k] / self.train_tokens_per_s), "measured"
        if not self.shared:
            return 1.0 / (1.0 + contention * (k - 1)), "assumed"
        # the total of k processes, k x each one's share, linear between measured k; flat past the last
        pts = sorted({1: 1.0, **{j: j * v / self.train_tokens_per_s for j, v in self.shared.items()}}.items())
        if k >= pts[-1][0]:
            return min(1.0, pts[-1][1] / k), "interpolated"
        (k0, g0), (k1, g1) = next((a, b) for a, b in zip(pts, pts[1:]) if a[0] <= k <= b[0])
        return min(1.0, (g0 + (g1 - g0) * (k - k0) / (k1 - k0)) / k), "interpolated"


def measure_device(cfgs: Sequence[RunConfig], device: str | None = None) -> str:
    """Where to measure: `device` if given (and here), else the configs' own device where this
    machine has it, else its CPU."""
    import torch

    wanted = {c.device for c in cfgs}
    if len(wanted) > 1:
        raise ValueError(f"the configs train on several devices ({', '.join(sorted(wanted))}): plan one profile at a time")
    if device is not None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"the measuring device must be cpu or cuda, not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device on this machine to measure on (measure on the cpu, with --speedup)")
        return device
    return "cuda" if wanted == {"cuda"} and torch.cuda.is_available() else "cpu"


def _time_shape(cfg: RunConfig, device: str, steps: int, warmup: int, barrier=None) -> dict[str, float]:
    """Seconds a step of the run's own training loop, and evaluation tokens/s, for one config (one shape)."""
    import numpy as np
    import torch

    from .data import eval_windows, load_corpus
    from .head import choose_head
    from .arch import build_model
    from .train import _optimizer, _train_step, evaluate, lr_at

    dev = torch.device(device)
    cfg = cfg.replace(device=device) if cfg.device != device else cfg
    corpus = load_corpus(cfg.corpus, cfg.tokenizer)
    train_tokens = corpus.tokens("train")
    for _ in range(2):  # the second time: what a run pays, not the first model's lazy initialisations
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        model = build_model(cfg).to(dev)
        opt = _optimizer(model, cfg, dev)
        setup_s = time.perf_counter() - t0
    # not in setup_s: the head is timed once a machine and shape (on a CPU; cached for the runs after)
    choose_head(model, cfg, dev)
    rng = np.random.default_rng(cfg.seed)

    def step(i: int) -> float:
        t = time.perf_counter()
        _train_step(model, opt, cfg, dev, lr_at(cfg, i, cfg.steps), train_tokens, rng)  # returns a float: synced
        return time.perf_counter() - t

    for i in range(warmup):
        step(i)
    if barrier is not None:  # every process times its steps at the same moment
        barrier.wait(timeout=600)
    times = [step(warmup + i) for i in range(steps)]
    windows = eval_windows(corpus.tokens("val"), cfg.n_ctx, EVAL_BATCHES * cfg.batch_size * cfg.n_ctx,
                           version=cfg.eval_version)
    evaluate(model, windows[: cfg.batch_size], cfg, dev)  # warm-up
    t = time.perf_counter()
    evaluate(model, windows, cfg, dev)
    eval_s = time.perf_counter() - t
    return dict(s_per_step=statistics.median(times), train_tokens_per_s=cfg.tokens_per_step / statistics.median(times),
                eval_tokens_per_s=windows.shape[0] * cfg.n_ctx / eval_s, setup_s=setup_s)


def _shared_worker(cfg_dicts: list[dict], device: str, steps: int, warmup: int, threads: int, barrier, queue) -> None:
    """One of k processes timing every shape at once with the others (spawned by `measure`)."""
    import torch

    torch.set_num_threads(threads)
    try:
        for d in cfg_dicts:
            cfg = RunConfig.from_dict(d)
            barrier.wait(timeout=600)  # all k have set up the previous shape's leftovers
            queue.put((shape_of(cfg), _time_shape(cfg, device, steps, warmup, barrier)["train_tokens_per_s"]))
    except Exception as e:  # the parent reports it, and stops waiting
        barrier.abort()
        queue.put(("error", f"{type(e).__name__}: {e}"))


def _measure_shared(shapes: list[RunConfig], k: int, device: str, steps: int, warmup: int,
                    threads: int) -> dict[str, float]:
    """Each shape's training tokens/s per process, the mean over k processes timing it at once."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_shared_worker, args=([c.to_dict() for c in shapes], device, steps, warmup, threads,
                                                      barrier, queue), daemon=True) for _ in range(k)]
    for p in procs:
        p.start()
    got: dict[str, list[float]] = {}
    try:
        for _ in range(k * len(shapes)):
            name, value = queue.get(timeout=900)
            if name == "error":
                raise RuntimeError(f"a measuring process failed: {value}")
            got.setdefault(name, []).append(value)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return {s: statistics.mean(v) for s, v in got.items()}


def measure(cfgs: Sequence[RunConfig], *, device: str | None = None, steps: int = STEPS, warmup: int = WARMUP,
            threads: int = 1, processes: Iterable[int] = (), progress: bool = True) -> dict[str, Any]:
    """Each distinct shape's Rate on this machine (one process, and k at once for each k in
    `processes`), with what it was measured on: the `measured` section of a plan."""
    import torch
    from tqdm import tqdm

    from .head import machine_key

    if steps < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"steps and threads must be at least 1 and warmup at least 0, not {steps}, {threads}, {warmup}")
    ks = sorted({int(k) for k in processes} - {1})
    if any(k < 1 for k in ks):
        raise ValueError(f"processes to measure at once must be at least 1, not {ks}")
    device = measure_device(cfgs, device)
    first: dict[str, RunConfig] = {}
    for c in cfgs:  # the first config of each shape stands for its runs
        first.setdefault(shape_of(c), c)
    shapes = list(first.values())
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rates: dict[str, dict] = {}
    try:
        for c in tqdm(shapes, desc=f"gpu-plan: timing {len(shapes)} shape(s) on {device}", disable=not progress,
                      leave=False):
            t = _time_shape(c, device, steps, warmup)
            rates[shape_of(c)] = asdict(Rate(shape_of(c), t["train_tokens_per_s"], t["eval_tokens_per_s"], t["setup_s"]))
    finally:
        torch.set_num_threads(before)
    for k in ks:
        if progress:
            print(f"gpu-plan: timing {len(shapes)} shape(s) in {k} processes at once", file=sys.stderr, flush=True)
        for s, v in _measure_shared(shapes, k, device, steps, warmup, threads).items():
            rates[s]["shared"][k] = v
    name = torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine())
    return dict(schema=SCHEMA, device=device, device_name=f"{device}:{name}", host=platform.node(), threads=threads,
                steps=steps, warmup=warmup, processes=[1, *ks], machine=machine_key(), torch=torch.__version__,
                loadavg_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                when=time.strftime("%Y-%m-%dT%H:%M:%S%z"), rates=rates)


def rates_of(measured: Mapping[str, Any]) -> dict[str, Rate]:
    """The Rates of a `measured` section (as `measure` returns it, or read back from a plan's JSON)."""
    if measured.get("schema") != SCHEMA or not isinstance(measured.get("rates"), dict) or "device" not in measured:
        raise ValueError(f"not a gpu-plan measurement (schema {SCHEMA} with 'rates'): keys {sorted(measured)[:8]}")
    return {s: Rate(s, r["train_tokens_per_s"], r["eval_tokens_per_s"], r["setup_s"],
                    {int(k): v for k, v in r.get("shared", {}).items()})
            for s, r in measured["rates"].items()}


# ---------------------------------------------------------------------------------------------
# Packing the runs into P processes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """A run as the pool sees it: seconds of setup (alone, uncontended) and of computing (alone on the device)."""

    name: str
    setup_s: float
    compute_s: float
    shape: str = ""


@dataclass(frozen=True)
class Packing:
    """When each job started and ended, on which worker, and when the last one ended."""

    processes: int
    total_s: float
    start_s: tuple[float, ...]
    end_s: tuple[float, ...]
    worker: tuple[int, ...]
    busy_s: tuple[float, ...]


def pack(jobs: Sequence[Job], processes: int, *, share: Callable[[Job, int], float] = lambda job, k: 1.0,
         startup_s: float = 0.0, runs_per_worker: int = 0) -> Packing:
    """The local pool, simulated: `processes` workers take the jobs in order as they come free; a
    worker that is fresh (its first job, or every `runs_per_worker`-th with a limit; each job with 1)
    first spends `startup_s`; then the job sets up, then computes at `share(job, k)` of its lone
    speed while k jobs compute at once. Start-ups and set-ups are not slowed by sharing."""
    if processes < 1 or runs_per_worker < 0 or startup_s < 0:
        raise ValueError(f"processes must be at least 1, runs_per_worker and startup_s at least 0: "
                         f"not {processes}, {runs_per_worker}, {startup_s}")
    n = len(jobs)
    start, end, worker = [0.0] * n, [0.0] * n, [0] * n
    ready, compute = [0.0] * n, [0.0] * n  # what is left of each job's start-up and set-up, and of its computing
    slots: list[int | None] = [None] * processes
    runs = [0] * processes
    queue, t = deque(range(n)), 0.0
    while True:
        for i, j in enumerate(slots):
            if j is None and queue:
                j = queue.popleft()
                fresh = runs[i] == 0 if runs_per_worker == 0 else runs[i] % runs_per_worker == 0
                ready[j], compute[j] = (startup_s if fresh else 0.0) + jobs[j].setup_s, jobs[j].compute_s
                slots[i], start[j], worker[j] = j, t, i
                runs[i] += 1
        active = [j for j in slots if j is not None]
        if not active:
            break
        k = sum(1 for j in active if ready[j] <= 0)
        speed = {j: 1.0 if ready[j] > 0 else share(jobs[j], k) for j in active}
        bad = [v for v in speed.values() if not 0 < v <= 1]
        if bad:
            raise ValueError(f"a share must lie in (0, 1], not {bad[0]}")
        dt = min((ready[j] if ready[j] > 0 else compute[j] / speed[j]) for j in active)
        t += dt
        for i, j in enumerate(slots):
            if j is None:
                continue
            if ready[j] > 0:
                ready[j] = 0.0 if ready[j] - dt <= 1e-9 * max(1.0, t) else ready[j] - dt
            else:
                compute[j] -= dt * speed[j]
            if ready[j] <= 0 and compute[j] <= 1e-9 * max(1.0, t):
                end[j], slots[i] = t, None
    busy = [0.0] * processes
    for j in range(n):
        busy[worker[j]] += end[j] - start[j]
    return Packing(processes, max(end, default=0.0), tuple(start), tuple(end), tuple(worker), tuple(busy))


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------
def plan(works: Sequence[Work], rates: Mapping[str, Rate], *, processes: Sequence[int] = (1, 2, 4, 8),
         speedup: float | None = None, contention: float = CONTENTION, startup_s: float = STARTUP_S,
         runs_per_worker: int = 0) -> dict[str, Any]:
    """Predicted device time of the runs, alone each and packed into P processes for each P.

    A run alone takes setup_s + (train_tokens / train rate + eval_tokens / eval rate) / speedup,
    where `speedup` (None: 1, the rates were measured on the device) is the device's speed over
    the measuring machine's. Packed, the pool is simulated by `pack`, each shape's share of the
    device from its measured sharing where there is one, else from `contention`.
    """
    if speedup is not None and not (speedup > 0 and math.isfinite(speedup)):
        raise ValueError(f"speedup must be positive, not {speedup}")
    if not 0 <= contention <= 1:
        raise ValueError(f"contention must lie in [0, 1] (0: sharing costs nothing, 1: it gains nothing), not {contention}")
    if not processes or any(int(p) < 1 for p in processes):
        raise ValueError(f"processes must be at least 1, not {list(processes)}")
    missing = sorted({w.shape for w in works} - set(rates))
    if missing:
        raise LookupError(f"no measured rate for shape {missing[0]!r} ({len(missing)} shape(s) missing): measure it")
    s = speedup or 1.0
    jobs, rows = [], []
    for w in works:
        r = rates[w.shape]
        train_s, eval_s = w.train_tokens / r.train_tokens_per_s / s, w.eval_tokens / r.eval_tokens_per_s / s
        jobs.append(Job(w.name, r.setup_s, train_s + eval_s, w.shape))
        rows.append(dict(asdict(w), train_s=train_s, eval_s=eval_s, setup_s=r.setup_s, alone_s=r.setup_s + train_s + eval_s))
    packings = []
    for P in sorted({int(p) for p in processes}):
        kinds = {rates[w.shape].share(P, contention)[1] for w in works} or {"measured"}
        p = pack(jobs, P, share=lambda job, k: rates[job.shape].share(k, contention)[0], startup_s=startup_s,
                 runs_per_worker=runs_per_worker)
        sharing = "measured" if kinds == {"measured"} else ("assumed" if "assumed" in kinds else "interpolated")
        packings.append(dict(processes=P, total_s=p.total_s, busy_s=list(p.busy_s), sharing=sharing,
                             runs=[dict(key=w.key, worker=p.worker[j], start_s=p.start_s[j], end_s=p.end_s[j])
                                   for j, w in enumerate(works)]))
    return dict(runs=rows, packings=packings, train_tokens=sum(w.train_tokens for w in works),
                eval_tokens=sum(w.eval_tokens for w in works),
                assumed=dict(speedup=speedup, startup_s=startup_s,
                             contention=contention if any(p["sharing"] == "assumed" for p in packings) else None),
                runs_per_worker=runs_per_worker)


BEST_WITHIN = 0.01  # a pool no more than 1% slower than the fastest is as good, and fewer processes contend less


def best(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The packing with the fewest processes whose predicted total is within BEST_WITHIN of the shortest."""
    if not result["packings"]:
        return None
    shortest = min(p["total_s"] for p in result["packings"])
    return min((p for p in result["packings"] if p["total_s"] <= shortest * (1 + BEST_WITHIN)),
               key=lambda p: p["processes"])


# ---------------------------------------------------------------------------------------------
# Showing it
# ---------------------------------------------------------------------------------------------
def duration(s: float) -> str:
    """12.3s, 4m05s, 1h02m."""
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def table(result: Mapping[str, Any]) -> str:
    """The plan as text: what was measured, what was assumed, the totals by P and the runs of the best P."""
    m, a = result["measured"], result["assumed"]
    lines = [f"gpu-plan: {result['sweep']}/{result['profile']}, {len(result['runs'])} run(s) "
             f"({result['which']}), on {result['target_device']}; {result['train_tokens'] / 1e6:.1f}M tokens "
             f"trained, {result['eval_tokens'] / 1e6:.1f}M scored",
             f"measured ({m['when']}, {m['device_name']} on {m['host']}, {m['threads']} thread(s), median of "
             f"{m['steps']} step(s) after {m['warmup']}, processes at once {m['processes']}"
             + (f", load {m['loadavg_1min']:.1f}" if m.get("loadavg_1min") is not None else "") + "):",
             f"  {'shape':<50} {'runs':>4} {'train tok/s':>12} {'eval tok/s':>12} {'setup':>7}  shared (k: tok/s each)"]
    counts: dict[str, int] = {}
    for r in result["runs"]:
        counts[r["shape"]] = counts.get(r["shape"], 0) + 1
    for s, n in counts.items():
        r = m["rates"][s]
        shared = ", ".join(f"{k}: {v:,.0f}" for k, v in sorted((int(k), v) for k, v in r.get("shared", {}).items()))
        lines.append(f"  {s:<50} {n:>4} {r['train_tokens_per_s']:>12,.0f} {r['eval_tokens_per_s']:>12,.0f} "
                     f"{r['setup_s']:>6.1f}s  {shared or '-'}")
    said = []
    if a["speedup"] is not None:
        said.append(f"the device runs {a['speedup']:g}x the measured rates (--speedup)")
    if a["contention"] is not None:
        said.append(f"P processes without a measured sharing each run at 1/(1 + {a['contention']:g} (P-1)) of a "
                    "lone one's speed (--contention)")
    said.append(f"a fresh worker takes {a['startup_s']:g}s to start (--startup-s)")
    lines.append("assumed: " + "; ".join(said))
    rpw = result["runs_per_worker"]
    lines.append("predicted device time, the runs in the sweep's order onto P workers "
                 + ("each for the whole sweep (--runs-per-worker 0):" if rpw == 0 else
                    f"replaced every {rpw} run(s) (--runs-per-worker {rpw}):"))
    lines.append(f"  {'P':>3} {'total':>9} {'busiest':>9}  sharing")
    for p in result["packings"]:
        lines.append(f"  {p['processes']:>3} {duration(p['total_s']):>9} {duration(max(p['busy_s'])):>9}  {p['sharing']}")
    b = best(result)
    if b is not None:
        lines.append(f"runs at P = {b['processes']} (the fewest processes within {BEST_WITHIN:.0%} of the shortest total):")
        lines.append(f"  {'run':<50} {'key':<12} {'train':>8} {'scored':>8} {'alone':>8} {'start':>8} {'end':>8}")
        for r, s in zip(result["runs"], b["runs"]):
            lines.append(f"  {r['sweep'] + '/' + r['name']:<50} {r['key']:<12} {r['train_tokens'] / 1e6:>7.2f}M "
                         f"{r['eval_tokens'] / 1e6:>7.2f}M {duration(r['alone_s']):>8} {duration(s['start_s']):>8} "
                         f"{duration(s['end_s']):>8}")
    lines.append(result["note"])
    return "\n".join(lines)


def sweep_plan(name: str, profile_name: str, *, store=None, overrides: dict | None = None, max_N: float | None = None,
               min_N: float | None = None, every: bool = False, processes: Sequence[int] = (1, 2, 4, 8), measure_processes: Iterable[int] = (),
               device: str | None = None, rates: Mapping[str, Any] | None = None, speedup: float | None = None,
               contention: float = CONTENTION, startup_s: float = STARTUP_S, runs_per_worker: int = 0,
               steps: int = STEPS, warmup: int = WARMUP, threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """The plan of a named sweep: what the store lacks of it (every run with `every`), measured here
    (or read from `rates`, the `measured` section of a plan made on the device), then planned."""
    from .plans import configs
    from .store import Store
    from .sweep import in_range

    store = store or Store()
    cfgs = [c for c in dict.fromkeys(configs(name, profile_name, store, overrides))
            if (every or not store.has(c)) and in_range(c.N, min_N, max_N)]
    which = "every run of the sweep" if every else "what the store lacks"
    if not cfgs:
        raise LookupError(f"nothing to plan: the store {store.root} holds every run of {name}/{profile_name} "
                          "(--all plans them all)")
    target = cfgs[0].device
    if rates is not None:
        measured = dict(rates)
        shape_rates = rates_of(measured)  # a file that is not a measurement fails here, before anything is counted
    where = measured["device"] if rates is not None else measure_device(cfgs, device)
    if speedup is None and where != target:  # said before measuring, which takes minutes
        raise ValueError(f"the runs train on {target} but the rates {'were' if rates is not None else 'would be'} "
                         f"measured on {where}: give --speedup S ({target} over {where}, an assumption) or "
                         f"--rates FILE (a gpu-plan --json measured on {target})")
    if rates is None:
        measured = measure(cfgs, device=device, steps=steps, warmup=warmup, threads=threads,
                           processes=measure_processes, progress=progress)
        shape_rates = rates_of(measured)
    splits = {}
    works = []
    for c in cfgs:
        corpus = (c.corpus, c.tokenizer)
        if corpus not in splits:
            splits[corpus] = corpus_splits(c)
        works.append(run_work(c, splits[corpus]))
    out = plan(works, shape_rates, processes=processes, speedup=speedup, contention=contention,
               startup_s=startup_s, runs_per_worker=runs_per_worker)
    note = ("note: each run is planned to its end (an early stop ends sooner); grids that grow with results "
            "(the learning-rate edges, the tuned ladder's seeds) are planned as they stand now")
    return dict(sweep=name, profile=profile_name, which=which, target_device=target, measured=measured, **out,
                note=note)
