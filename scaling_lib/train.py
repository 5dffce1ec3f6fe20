"""Training one run: AdamW, warmup then cosine (or warmup-stable-decay) and log-spaced evaluations.

A run is described by a RunConfig and ends as a record (a JSON-ready dict) that the store files.
It checkpoints as it goes and resumes from the checkpoint after an interruption; on SIGTERM (a
preemption, `preempt`) it checkpoints at once and stops. A run whose loss turns NaN ends with a
record saying so, not with a crash. Under torchrun it trains data-parallel (`distributed`): the
config's batch is the global batch, split over the ranks, and rank 0 alone writes.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock, Timeout
from tqdm import tqdm

from . import distributed, preempt
from .arch import C_train, train_flops_per_token
from .batch import measure_noise_scale
from .config import RunConfig
from .data import cache_dir, data_subset, eval_windows, load_corpus, progress_path, run_lock_path, sample_batch
from .distributed import World
from .head import choose_head, set_head
from .arch import build_model
from .model import LanguageModel, head_losses
from .store import SCHEMA_VERSION, Store

FINAL_EVAL_TOKENS = 1_048_576  # the final evaluation reads at most this many tokens of each split
PER_POSITION_DIGITS = 4  # a curve point's per-position losses (eval_per_position), rounded to keep records small
CHECKPOINT_SECONDS = 300.0
NOISE_CHUNKS = 4  # B_simple: each measurement batch splits into this many small ones where the batch allows
NOISE_STREAM = 0x6E6F697365  # "noise": the measurement batches' seed, beside the run's seed and the step


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------
def lr_at(cfg: RunConfig, step: int, total_steps: int, decay_start: int | None = None) -> float:
    """Peak LR times the schedule: linear warmup, then cosine to min_lr_ratio, or stable then linear decay (wsd)."""
    warmup = max(1, cfg.warmup_tokens // cfg.tokens_per_step)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    lo = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return cfg.lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * progress)))
    # wsd: stable at the peak, then a linear cooldown over the last cooldown_frac of the steps
    start = decay_start if decay_start is not None else cooldown_start(cfg, total_steps)
    if step < start:
        return cfg.lr
    progress = min(1.0, (step - start) / max(1, total_steps - start))
    return cfg.lr * (1 - (1 - lo) * progress)


def cooldown_start(cfg: RunConfig, total_steps: int) -> int:
    return max(1, int(round((1 - cfg.cooldown_frac) * total_steps)))


def eval_steps(total_steps: int, per_decade: int) -> list[int]:
    """Steps at which to evaluate: 0, then log-spaced (per_decade a decade), and the last."""
    k = np.arange(0, per_decade * math.log10(max(total_steps, 1)) + 1)
    steps = np.unique(np.round(10 ** (k / per_decade)).astype(int))
    return sorted({0, *[int(s) for s in steps if s < total_steps], total_steps})


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: LanguageModel, windows: np.ndarray, cfg: RunConfig, device: torch.device,
             per_position: bool = False) -> Any:
    """Mean next-token loss over fixed windows (and, if asked, the mean loss at each position)."""
    model.eval()
    pos, n = torch.zeros(cfg.n_ctx, dtype=torch.float64), 0
    for i in range(0, len(windows), cfg.batch_size):
        batch = torch.from_numpy(windows[i : i + cfg.batch_size]).to(device)
        with _autocast(cfg, device):
            loss = model(batch[:, :-1], batch[:, 1:], per_position=True)  # (T,)
        pos += loss.double().cpu() * batch.size(0)
        n += batch.size(0)
    model.train()
    pos /= max(n, 1)
    return (float(pos.mean()), pos.tolist()) if per_position else float(pos.mean())


@torch.no_grad()
def score(model: LanguageModel, windows: np.ndarray, cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """Evaluation 2: the mean next-token loss over fixed windows, its standard error over the
    windows, and the mean loss at each position (every window weighs the same)."""
    model.eval()
    per_window, pos = [], torch.zeros(cfg.n_ctx, dtype=torch.float64)
    for i in range(0, len(windows), cfg.batch_size):
        batch = torch.from_numpy(windows[i : i + cfg.batch_size]).to(device)
        with _autocast(cfg, device):
            loss = _token_losses(model, batch[:, :-1], batch[:, 1:])  # (B, T)
        per_window.append(loss.double().mean(1).cpu())
        pos += loss.double().sum(0).cpu()
    model.train()
    w = torch.cat(per_window).numpy()
    se = float(w.std(ddof=1) / math.sqrt(w.size)) if w.size > 1 else math.nan
    return dict(loss=float(w.mean()), se=se, windows=int(w.size), per_position=(pos / w.size).tolist())


def _token_losses(model: LanguageModel, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of every token, (B, T), through the tied output layer a chunk of tokens at a time:
    the whole (B, T, vocab) logits would be several times slower on a CPU at these widths."""
    h = model.hidden(idx)
    return head_losses(h.reshape(-1, h.size(-1)), model.wte.weight, targets.reshape(-1), "chunked").view(targets.shape)


def _rounded(losses: list[float]) -> list[float]:
    return [round(x, PER_POSITION_DIGITS) for x in losses]


def _autocast(cfg: RunConfig, device: torch.device):
    if cfg.dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
class RunLocked(RuntimeError):
    """Another process is training this very run (they would share, and spoil, one checkpoint)."""


class RunStopped(RuntimeError):
    """The run reached its stop time, or was asked to stop by a signal (preempt), and saved a
    checkpoint: it resumes from there next time."""


class AlreadyStored(RuntimeError):
    """Another process finished and filed this run before this one took its lock."""

    def __init__(self, path: Path):
        super().__init__(f"already stored at {path}")
        self.path = path


def train(cfg: RunConfig, *, progress: bool = True, checkpoint_dir: Path | None = None,
          sweep_note: str = "", stop_at: float | None = None, store: Store | None = None) -> dict[str, Any]:
    """Train the run a config describes and return its record (see store.py for the layout).

    One process at a time trains a given run: a second one (a `train --config` of a run that a sweep
    is training, say) gets RunLocked instead of sharing the checkpoint. At `stop_at` (a time.time()
    value) the run checkpoints and raises RunStopped. With a store, the record is filed while the
    lock is held, and a run that another process filed first raises AlreadyStored: no run is
    trained twice. SIGTERM or SIGUSR2 while it trains checkpoints and raises RunStopped.

    Under torchrun every rank calls this alike and gets the same record; rank 0 alone takes the
    lock, checkpoints, writes the progress file and files the record.
    """
    world = distributed.world(cfg.device)
    ckpt = _checkpoint_path(cfg, checkpoint_dir)
    with _run_lock(ckpt, cfg, world), preempt.handling():
        found = store.find(cfg) if store is not None and world.main else None
        if (found := distributed.broadcast(world, found)) is not None:
            raise AlreadyStored(found)
        rec = _train(cfg, ckpt, progress, sweep_note, stop_at, world)
        if store is not None and world.main:
            rec["path"] = str(store.save(rec))
        return distributed.broadcast(world, rec)


@contextlib.contextmanager
def _run_lock(ckpt: Path, cfg: RunConfig, world: World = World()):
    """An exclusive lock beside the checkpoint, held by rank 0; the system drops it if the process dies."""
    lock_path = run_lock_path(cfg.key, ckpt.parent)
    lock = FileLock(lock_path, timeout=0)
    held = False
    if world.main:
        with contextlib.suppress(Timeout):
            lock.acquire()
            held = True
    if not distributed.broadcast(world, held):
        raise RunLocked(f"{cfg.name} ({cfg.key}) is being trained by another process "
                        f"(its checkpoint lock {lock_path} is held)") from None
    if not world.main:
        yield
        return
    try:
        yield
    finally:
        lock.release()
        # removed after release; a process that opened the file in the instant between would lock
        # the removed file, a race between three processes that we accept
        lock_path.unlink(missing_ok=True)


def _train(cfg: RunConfig, ckpt: Path, progress: bool, sweep_note: str, stop_at: float | None,
           world: World = World()) -> dict[str, Any] | None:
    """The run itself; returns the record on rank 0, None on the other ranks."""
    device = _device(cfg, world)
    batch = distributed.per_rank_batch(cfg.batch_size, world)
    progress = progress and world.main
    commit = _git_commit()  # of the code that starts the run
    torch.manual_seed(cfg.seed)
    corpus = load_corpus(cfg.corpus, cfg.tokenizer)
    train_tokens = corpus.tokens("train")
    if cfg.data_tokens:
        if cfg.data_tokens > train_tokens.size:
            raise ValueError(f"data_tokens {cfg.data_tokens} exceeds the training split ({train_tokens.size} tokens)")
        train_tokens = data_subset(train_tokens, cfg.data_tokens)
    if corpus.vocab_size != cfg.vocab:
        raise ValueError(f"tokenizer {cfg.tokenizer} built a vocabulary of {corpus.vocab_size}, not {cfg.vocab}")
    ev = Evaluation(cfg, corpus, device)

    model = build_model(cfg).to(device)
    # the output layer's strategy (provenance, not the run's identity): rank 0 times, every rank uses its pick
    head = distributed.broadcast(world, choose_head(model, cfg, device) if world.main else None)
    net = _data_parallel(model, world)  # what trains; `model` is what is evaluated and saved
    opt = _optimizer(model, cfg, device)
    rng = _data_rng(cfg, world)
    S = cfg.steps
    budget_steps = {b: max(1, b // cfg.tokens_per_step) for b in cfg.budgets}
    branch_at = {cooldown_start(cfg, s): b for b, s in budget_steps.items()}
    evals = set(eval_steps(S, cfg.evals_per_decade))
    c_per_token = _compute_per_token(cfg)

    state = dict(step=0, curve=[], budgets=[], train_loss_sum=0.0, train_loss_n=0, wall=0.0, status="ok",
                 noise_s=0.0, best_val=float("inf"), best_step=0, best_model=None, evals_past_best=0, diverged_at=None)
    if distributed.broadcast(world, ckpt.exists()):
        state = {**state, **_load_checkpoint(ckpt, model, opt, rng, device, world)}
        if progress:
            print(f"resuming {cfg.name} from step {state['step']}")
    set_head(model, state.setdefault("head", head)["strategy"])  # a resumed run keeps the strategy it began with

    bar = tqdm(total=S, initial=state["step"], desc=cfg.name, disable=not progress, leave=False, mininterval=2)
    last_ckpt = time.time()
    t_resumed = time.time()
    step = state["step"]
    while step <= S:
        if step in branch_at and not any(b["tokens"] == branch_at[step] for b in state["budgets"]):
            state["budgets"].append(_cooldown_branch(model, opt, cfg, device, step, budget_steps[branch_at[step]],
                                                     train_tokens, ev, c_per_token, net, world))
        if step in evals:
            # rank 0 evaluates, and every rank acts on its verdict
            scored = ev.curve_point(model) if world.main else {}
            val = distributed.broadcast(world, scored.get("val_loss"))
            noise = {}
            if cfg.noise_batches and world.main and math.isfinite(val):
                t_noise = time.time()
                noise = noise_point(model, cfg, device, train_tokens, step)
                state["noise_s"] += time.time() - t_noise  # in the wall time, out of the throughput
            tokens = step * cfg.tokens_per_step
            point = dict(
                step=step, tokens=tokens, C=C_train(cfg, tokens), C_exact=c_per_token * tokens,
                lr=lr_at(cfg, max(step - 1, 0), S), val_loss=val,
                train_loss=state["train_loss_sum"] / state["train_loss_n"] if state["train_loss_n"] else None,
                **{f"val_loss_{name}": loss for name, loss in (ev.others(model) if world.main else {}).items()},
                **{k: v for k, v in scored.items() if k != "val_loss"}, **noise,
            )
            state["curve"].append(point)
            state["train_loss_sum"], state["train_loss_n"] = 0.0, 0
            bar.set_postfix(val=f"{val:.3f}")
            if not math.isfinite(val):
                state["status"], state["diverged_at"] = "diverged", step
                break
            if val < state["best_val"]:
                state["best_val"], state["best_step"], state["evals_past_best"] = val, step, 0
                if cfg.early_stop and ev.v2 and world.main:  # keep the model that early stopping selects
                    state["best_model"] = copy.deepcopy(model.state_dict())
            else:
                state["evals_past_best"] += 1
            if cfg.early_stop and state["evals_past_best"] >= 3 and val > 1.01 * state["best_val"]:
                state["status"] = "early_stopped"
                break
        if step == S:
            break
        loss = _train_step(net, opt, cfg, device, lr_at(cfg, step, S), train_tokens, rng, world=world, batch=batch)
        if not math.isfinite(loss):
            state["status"], state["diverged_at"] = "diverged", step
            break
        state["train_loss_sum"] += loss
        state["train_loss_n"] += 1
        step += 1
        state["step"] = step
        bar.update(1)
        # a signal (preemption) or the deadline: checkpoint now and stop; else every CHECKPOINT_SECONDS
        stopping, due = distributed.any_rank(world, preempt.requested() is not None
                                             or (stop_at is not None and time.time() > stop_at),
                                             time.time() - last_ckpt > CHECKPOINT_SECONDS)
        if stopping or due:
            state["wall"] += time.time() - t_resumed
            t_resumed = time.time()
            _save_checkpoint(ckpt, state, model, opt, rng, world)
            if world.main:
                _write_progress(ckpt, cfg, state)
            last_ckpt = time.time()
            if stopping:
                bar.close()
                why = f"by {_signal_name()}" if preempt.requested() else "at its deadline"
                raise RunStopped(f"{cfg.name} ({cfg.key}) stopped {why} at step {step} of {S}: "
                                 "it resumes from its checkpoint")
    bar.close()
    state["wall"] += time.time() - t_resumed
    if not world.main:
        return None

    t_final = time.time()
    record = _record(cfg, model, ev, train_tokens, state, device, c_per_token, sweep_note, commit)
    record["provenance"]["wall_time_s"] = state["wall"] + (time.time() - t_final)
    record["provenance"]["head"] = state["head"]
    if cfg.noise_batches:  # seconds spent measuring the noise scale: in wall_time_s, not in tokens_per_s
        record["provenance"]["noise_scale_s"] = state["noise_s"]
    # the config's batch_size is the effective (global) batch: the sum over the ranks of batch_per_rank
    record["provenance"].update(ranks=world.size, backend=world.backend, batch_per_rank=batch)
    for done in (ckpt, progress_path(cfg.key, ckpt.parent)):
        with contextlib.suppress(FileNotFoundError):
            done.unlink()
    return record


class Evaluation:
    """The windows a run is scored on, by its config's eval_version (config.EVAL_VERSION).

    Version 2: the curve on `eval_tokens` windows of the validation split; every budget (each
    cooldown branch and the longest) and the curve's last point on one set of final windows (up to
    FINAL_EVAL_TOKENS, non-overlapping), with a standard error over windows. Version 1, kept so that
    its stored runs can be retrained and compared: the branches on the curve's windows, the longest
    budget on the final windows, overlapping on a short split, no standard errors.
    """

    def __init__(self, cfg: RunConfig, corpus, device: torch.device):
        self.cfg, self.corpus, self.device = cfg, corpus, device
        self.v2 = cfg.eval_version >= 2
        v, val = cfg.eval_version, corpus.tokens("val")
        self.val = eval_windows(val, cfg.n_ctx, cfg.eval_tokens, version=v)
        # the other distributions follow the run at the same log-spaced steps, on a quarter of the tokens
        self.other = {name: eval_windows(corpus.tokens(name), cfg.n_ctx, max(cfg.eval_tokens // 4, cfg.n_ctx),
                                         version=v) for name in corpus.other}
        self.final = eval_windows(val, cfg.n_ctx, FINAL_EVAL_TOKENS, version=v)

    def curve(self, model) -> float:
        return evaluate(model, self.val, self.cfg, self.device)

    def curve_point(self, model) -> dict[str, Any]:
        """A curve evaluation: the mean loss, and with `eval_per_position` the loss at each position
        (rounded to PER_POSITION_DIGITS: a record holds one such vector per evaluation)."""
        if not self.cfg.eval_per_position:
            return dict(val_loss=self.curve(model))
        loss, pos = evaluate(model, self.val, self.cfg, self.device, per_position=True)
        return dict(val_loss=loss, per_position_loss=_rounded(pos))

    def others(self, model) -> dict[str, float]:
        return {name: evaluate(model, w, self.cfg, self.device) for name, w in self.other.items()}

    def budget(self, model) -> dict[str, Any]:
        """A budget's score: on the final windows (version 2) or the curve's (version 1)."""
        if self.v2:
            return score(model, self.final, self.cfg, self.device)
        return dict(loss=evaluate(model, self.val, self.cfg, self.device))

    def split(self, model, split: str) -> dict[str, Any]:
        windows = eval_windows(self.corpus.tokens(split), self.cfg.n_ctx, FINAL_EVAL_TOKENS,
                               version=self.cfg.eval_version)
        return score(model, windows, self.cfg, self.device)


def _data_parallel(model: LanguageModel, world: World) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel under torchrun (gradients averaged over the ranks
    in backward), the model itself in one process."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.local_rank] if world.backend == "nccl" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def _data_rng(cfg: RunConfig, world: World, *extra: int) -> np.random.Generator:
    """The order a rank draws its batches in: the seed alone in one process (as every stored run was
    trained), the seed, the number of ranks and the rank under torchrun, so no two ranks draw alike."""
    if not world.distributed:
        return np.random.default_rng([cfg.seed, *extra] if extra else cfg.seed)
    return np.random.default_rng([cfg.seed, *extra, world.size, world.rank])


def _signal_name() -> str:
    import signal

    return signal.Signals(preempt.requested()).name


def _train_step(model, opt, cfg, device, lr, train_tokens, rng, *, world: World = World(),
                batch: int | None = None) -> float:
    """One AdamW step on a batch of `batch` sequences (this rank's share; the config's by default);
    returns the loss over the global batch (the mean over the ranks)."""
    for group in opt.param_groups:
        group["lr"] = lr
    x = torch.from_numpy(sample_batch(train_tokens, batch or cfg.batch_size, cfg.n_ctx, rng)).to(device)
    with _autocast(cfg, device):
        loss = model(x[:, :-1], x[:, 1:])
    if not torch.isfinite(distributed.mean(world, loss)):  # every rank skips the step, or none does
        return float("nan")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return float(distributed.mean(world, loss.detach()))


def noise_chunks(batch_size: int) -> int:
    """The small batches that a measurement batch of `batch_size` sequences splits into for B_simple: the
    largest divisor from 2 to NOISE_CHUNKS, else the smallest divisor above it (a prime batch: itself)."""
    if batch_size < 2:
        raise ValueError(f"a batch of {batch_size} sequences does not split into small batches")
    small = [c for c in range(2, NOISE_CHUNKS + 1) if batch_size % c == 0]
    return max(small) if small else next(c for c in range(NOISE_CHUNKS + 1, batch_size + 1) if batch_size % c == 0)


def noise_point(model, cfg: RunConfig, device: torch.device, train_tokens: np.ndarray, step: int) -> dict[str, Any]:
    """The gradient noise scale at the model's current weights (config `noise_batches`), for a curve point.

    McCandlish et al. 2018, App. A (`batch.measure_noise_scale`): `noise_batches` batches of the run's
    batch_size sequences from the training split, each split into `noise_chunks` small batches; B_simple
    and the batch sizes in tokens. The gradient is the one the optimiser follows (training mode: dropout,
    if any, included). Training goes on exactly as without it: the batches come from a generator of their
    own, seeded by the run's seed and the step (nothing to checkpoint), torch's random state is restored
    afterwards, and the weights, their .grad and the optimiser are left as they were. A non-finite
    gradient gives nulls. Returns B_simple, G2 (|G|^2) and trace_sigma (tr Sigma), JSON floats (NaN: null).
    """
    rng = np.random.default_rng([cfg.seed, NOISE_STREAM, step])
    batches = (torch.from_numpy(sample_batch(train_tokens, cfg.batch_size, cfg.n_ctx, rng)).to(device)
               for _ in range(cfg.noise_batches))

    def loss_fn(m, x):
        with _autocast(cfg, device):
            return m(x[:, :-1], x[:, 1:])

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            est = measure_noise_scale(model, loss_fn, batches, chunks=noise_chunks(cfg.batch_size),
                                      examples_per_item=cfg.n_ctx)
        except ValueError as e:
            if "finite" not in str(e):
                raise
            return dict(B_simple=None, G2=None, trace_sigma=None)
    d = est.to_dict()
    return {k: d[k] for k in ("B_simple", "G2", "trace_sigma")}


def _cooldown_branch(model, opt, cfg, device, start, budget_steps, train_tokens, ev, c_per_token,
                     net=None, world: World = World()):
    """Train a copy from the stable phase down a linear cooldown to a shorter budget (Hägele et al. 2024)."""
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    rng = _data_rng(cfg, world, budget_steps)  # the main run's data order is left untouched
    batch = distributed.per_rank_batch(cfg.batch_size, world)
    loss = float("nan")
    for step in range(start, budget_steps):
        loss = _train_step(net or model, opt, cfg, device, lr_at(cfg, step, budget_steps, decay_start=start),
                           train_tokens, rng, world=world, batch=batch)
        if not math.isfinite(loss):
            break
    finite = math.isfinite(loss) or start == budget_steps
    # the other ranks keep a placeholder: only rank 0's budgets enter the record
    scored = ev.budget(model) if finite and world.main else dict(loss=float("nan"))
    val = scored["loss"]
    tokens = budget_steps * cfg.tokens_per_step
    model.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    extra = dict(val_loss_se=scored.get("se", math.nan), eval_windows=scored.get("windows")) if ev.v2 else {}
    return dict(tokens=tokens, steps=budget_steps, cooldown_from_step=start, val_loss=val, **extra,
                epochs=tokens / train_tokens.size, C=C_train(cfg, tokens), C_exact=c_per_token * tokens,
                status="ok" if math.isfinite(val) else "diverged")


def _final_v1(model, ev, state) -> dict[str, Any]:
    final: dict[str, Any] = {}
    cfg, device, corpus = ev.cfg, ev.device, ev.corpus
    final["val_loss"], final["per_position_loss"] = evaluate(model, ev.final, cfg, device, per_position=True)
    final["test_loss"] = evaluate(model, eval_windows(corpus.tokens("test"), cfg.n_ctx, FINAL_EVAL_TOKENS, version=1),
                                  cfg, device)
    final["other"] = {name: evaluate(model, eval_windows(corpus.tokens(name), cfg.n_ctx, FINAL_EVAL_TOKENS, version=1),
                                     cfg, device) for name in corpus.other}
    final["best_val_loss"] = min(state["best_val"], final["val_loss"])
    return final


def _final_v2(model, ev, state) -> tuple[dict[str, Any], dict[str, Any]]:
    """The end of the run scored on the final windows (the longest budget, and the curve's last
    point), and the final metrics of the model that the run selects: the last one, or, early
    stopped, the one with the best validation loss along the curve, on the test split as well."""
    end = ev.budget(model)
    last = state["curve"][-1]
    if last["step"] == state["step"]:
        last.update(val_loss_selection=last["val_loss"], val_loss=end["loss"], val_loss_se=end["se"],
                    eval_windows=end["windows"])
        if "per_position_loss" in last:  # the last point is scored on the final windows, position by position too
            last.update(per_position_loss_selection=last["per_position_loss"],
                        per_position_loss=_rounded(end["per_position"]))
    selected, selected_step = model, state["step"]
    if ev.cfg.early_stop and state["best_model"] is not None and state["best_step"] != state["step"]:
        selected = copy.deepcopy(model)
        selected.load_state_dict(state["best_model"])
        selected_step = state["best_step"]
    sel = end if selected is model else ev.budget(selected)
    test = ev.split(selected, "test")
    final = dict(val_loss=sel["loss"], val_loss_se=sel["se"], per_position_loss=sel["per_position"],
                 eval_windows=sel["windows"], eval_tokens=sel["windows"] * ev.cfg.n_ctx, selected_step=selected_step,
                 test_loss=test["loss"], test_loss_se=test["se"],
                 other={name: ev.split(selected, name)["loss"] for name in ev.corpus.other})
    final["best_val_loss"] = final["val_loss"]
    return end, final


def _record(cfg, model, ev, train_tokens, state, device, c_per_token, sweep_note, commit) -> dict[str, Any]:
    tokens = state["step"] * cfg.tokens_per_step
    final: dict[str, Any] = {}
    longest: dict[str, Any] = dict(val_loss=float("nan"))
    if state["status"] != "diverged":
        if ev.v2:
            end, final = _final_v2(model, ev, state)
            longest = dict(val_loss=end["loss"], val_loss_se=end["se"], eval_windows=end["windows"])
        else:
            final = _final_v1(model, ev, state)
            longest = dict(val_loss=final["val_loss"])
    budgets = sorted(state["budgets"], key=lambda b: b["tokens"])
    budgets.append(dict(tokens=tokens, steps=state["step"], cooldown_from_step=None, **longest,
                        epochs=tokens / train_tokens.size, C=C_train(cfg, tokens), C_exact=c_per_token * tokens,
                        status=state["status"]))
    return dict(
        schema=SCHEMA_VERSION, key=cfg.key, name=cfg.name, sweep=cfg.sweep, config=cfg.to_dict(),
        status=state["status"], diverged_at_step=state["diverged_at"],
        N=cfg.N, params_counted=model.n_params(non_embedding=True), N_total=model.n_params(non_embedding=False),
        tokens=tokens, steps=state["step"], data_tokens=int(train_tokens.size), epochs=tokens / train_tokens.size,
        C=C_train(cfg, tokens), C_exact=c_per_token * tokens,
        curve=state["curve"], budgets=budgets, final=final,
        provenance=_provenance(device, ev.corpus, state, tokens, sweep_note, commit),
    )


def _provenance(device, corpus, state, tokens, note, commit) -> dict[str, Any]:
    return dict(
        git_commit=commit, device=_device_name(device), torch=torch.__version__, numpy=np.__version__,
        python=platform.python_version(), threads=torch.get_num_threads(), host=platform.node(),
        # the throughput of training and evaluation: the noise scale's measurements (noise_s) left out
        tokens_per_s=tokens / (state["wall"] - state["noise_s"]) if state["wall"] > state["noise_s"] else None,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        corpus_files={k: v["sha256"][:16] for k, v in corpus.manifest["files"].items()}, note=note,
    )


def _compute_per_token(cfg: RunConfig) -> float:
    """Training FLOPs per token with embeddings and de-embedding counted (3x the exact forward)."""
    return train_flops_per_token(cfg)


def _optimizer(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with weight decay on the 2-D weights only (not on biases and layer norms)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=cfg.weight_decay), dict(params=no_decay, weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), foreach=True)


def _device(cfg: RunConfig, world: World = World()) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"run {cfg.name} asks for device 'cuda', but no CUDA device is available")
    if cfg.device == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return torch.device(cfg.device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "scaling_lib"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if out.returncode != 0:  # a copy of the tree without .git (the GPU machine)
            return os.environ.get("SCALING_LIB_COMMIT")
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SCALING_LIB_COMMIT")


# ---------------------------------------------------------------------------------------------
# Checkpoints (outside the repository)
# ---------------------------------------------------------------------------------------------
def _checkpoint_path(cfg: RunConfig, checkpoint_dir: Path | None) -> Path:
    d = Path(checkpoint_dir) if checkpoint_dir else cache_dir() / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{cfg.key}.pt"


def _save_checkpoint(path: Path, state, model, opt, rng, world: World = World()) -> None:
    """Rank 0 saves the model, the optimizer, every rank's data order (gathered from them) and
    torch's random state (what dropout draws from: a resumed run drops what it would have)."""
    rngs = distributed.gather(world, rng.bit_generator.state)
    if not world.main:
        return
    ck = dict(state=state, model=model.state_dict(), opt=opt.state_dict(), rng=rngs[0], torch_rng=_torch_rng(model))
    if world.distributed:
        ck.update(ranks=world.size, rngs=rngs)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a name of its own, should two writers meet
    torch.save(ck, tmp)
    os.replace(tmp, path)


def _write_progress(ckpt: Path, cfg: RunConfig, state) -> None:
    """A small JSON beside the checkpoint (data.read_progress), so a sweep can say how far its runs are;
    `pids` (this process and its parent) tell a sweep its own runs from those another process trains."""
    last = state["curve"][-1] if state["curve"] else {}
    info = dict(key=cfg.key, name=cfg.name, step=state["step"], steps=cfg.steps, wall_s=state["wall"],
                val_loss=last.get("val_loss"), val_tokens=last.get("tokens"), pids=[os.getpid(), os.getppid()])
    path = progress_path(cfg.key, ckpt.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model, opt, rng, device, world: World = World()) -> dict:
    ck = torch.load(path, map_location=device, weights_only=False)
    ranks = ck.get("ranks", 1)
    if ranks != world.size:
        raise ValueError(f"the checkpoint {path} was written by {ranks} rank(s): resume it with as many "
                         f"(now {world.size}), or remove it to start the run afresh")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    rng.bit_generator.state = ck["rngs"][world.rank] if world.distributed else ck["rng"]
    if "torch_rng" in ck:  # checkpoints written before dropout existed have none (and needed none)
        _set_torch_rng(model, ck["torch_rng"])
    return ck["state"]


def _torch_rng(model) -> dict[str, torch.Tensor]:
    """Torch's random state on the CPU and, for a model on a GPU, on its device."""
    device = next(model.parameters()).device
    out = dict(cpu=torch.get_rng_state())
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def _set_torch_rng(model, state: dict[str, torch.Tensor]) -> None:
    device = next(model.parameters()).device
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
