"""Sweeps on a cluster: one Slurm job a run, submitted through submitit.

`SubmititExecutor` is the runner's executor for `sweep --executor submitit`. Each run is one job,
named `<sweep>-<key>`, that trains its config into the store (`runner.run_one`): a resubmitted
sweep submits only what the store lacks, so it skips what is stored and retries what failed (a
failed record does not count as stored). Jobs are independent: the store and the checkpoints must
lie on a file system that every node shares (`--store`, `SCALING_LIB_CACHE`); a record is written
to a temporary name and renamed (never half-written), and a run's checkpoint lock keeps two jobs of
the same run (from two sweeps) from training it at once.

Preemption: Slurm's SIGTERM, or the SIGUSR2 that submitit asks for `signal_delay_s` before the time
limit, makes the run checkpoint and stop (`preempt`); on SIGUSR2 the job then hands the signal to
submitit, which requeues it, and the requeued job resumes from the checkpoint. SIGTERM to the sweep
itself (on the login node) makes it stop waiting and exit: its jobs run on and file their records.
"""
from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import submitit

from . import preempt
from .config import RunConfig
from .data import cache_dir
from .runner import RunResult, run_one, stopped_result
from .store import Store

log = logging.getLogger(__name__)

CLUSTERS = ("slurm", "local")  # local: submitit's own executor on this machine (tests, trials)


class RunJob(submitit.helpers.Checkpointable):
    """What one job runs: a config into a store; requeued as it is (checkpoint()) on preemption."""

    def __init__(self, cfg: dict[str, Any], root: str, threads: int, stop_at: float | None):
        self.cfg, self.root, self.threads, self.stop_at = cfg, root, threads, stop_at

    def __call__(self) -> RunResult:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        cfg = RunConfig.from_dict(self.cfg)
        if self.stop_at is not None and time.time() > self.stop_at:
            return stopped_result(cfg)
        old = preempt.install()  # submitit's handlers, handed the signal once the run has checkpointed
        res = run_one(cfg, Store(self.root), threads=self.threads, stop_at=self.stop_at)
        sig = preempt.requested()
        preempt.restore(old)
        if res.status == "stopped" and sig is not None:
            signal.raise_signal(sig)  # SIGUSR2: submitit requeues the job (and exits); SIGTERM: it ends here
        return res


class SubmititExecutor:
    """Each run a job on a Slurm cluster (or submitit's local executor), its result a Future.

    `partition`, `time_min`, `gpus`, `mem_gb` and `cpus` (default: `threads`) go to every job; job
    scripts and logs land under `folder` (default `$SCALING_LIB_CACHE/submitit`), one folder a job,
    and `folder/keys/<key>` names the job that a run was last submitted as.
    """

    def __init__(self, *, cluster: str = "slurm", folder: str | Path | None = None, partition: str | None = None,
                 time_min: int = 240, gpus: int = 0, mem_gb: float | None = None, cpus: int | None = None,
                 threads: int = 1, signal_delay_s: int = 120, poll_s: float = 2.0):
        if cluster not in CLUSTERS:
            raise ValueError(f"cluster must be one of {CLUSTERS}, not {cluster!r}")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise RuntimeError("no sbatch on this machine: submit from a Slurm login node "
                               "(or try the sweep here with --cluster local)")
        if time_min <= 0 or gpus < 0 or (mem_gb is not None and mem_gb <= 0):
            raise ValueError(f"time_min must be positive, gpus at least 0, mem_gb positive: "
                             f"not {time_min}, {gpus}, {mem_gb}")
        self.folder = Path(folder) if folder else cache_dir() / "submitit"
        self.threads, self.poll_s = threads, poll_s
        self.ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params: dict[str, Any] = dict(timeout_min=int(time_min), gpus_per_node=gpus, cpus_per_task=cpus or threads,
                                      tasks_per_node=1, nodes=1, slurm_signal_delay_s=signal_delay_s)
        if mem_gb:
            params["mem_gb"] = mem_gb
        if partition:
            params["slurm_partition"] = partition
        self.ex.update_parameters(**params)
        where = f"partition {partition}" if partition else "the default partition"
        self.description = (f"{cluster} jobs via submitit ({where}, {time_min} min, {gpus} GPU(s), "
                            f"{cpus or threads} CPU(s) each; logs under {self.folder})")
        self._jobs: dict[Future, Any] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="submitit-watcher", daemon=True)
        self._watcher.start()

    def submit(self, cfg: RunConfig, store: Store, stop_at: float | None) -> Future:
        self.ex.update_parameters(name=f"{cfg.sweep}-{cfg.key}")
        job = self.ex.submit(RunJob(cfg.to_dict(), str(Path(store.root).resolve()), self.threads, stop_at))
        keys = self.folder / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        (keys / cfg.key).write_text(f"{job.job_id}\n")
        log.info("submitted %s/%s (%s) as job %s", cfg.sweep, cfg.name, cfg.key, job.job_id)
        fut: Future = Future()
        # running from the sweep's point of view: a submitted job is not withdrawn by cancelling its
        # future (a cancelled Future that no executor marks as such would never count as done in wait())
        fut.set_running_or_notify_cancel()
        with self._lock:
            self._jobs[fut] = (job, cfg)
        return fut

    def _watch(self) -> None:
        """Resolve each future once its job is done (submitit polls the scheduler, rate-limited)."""
        while not self._closed.is_set():
            with self._lock:
                items = list(self._jobs.items())
            for fut, (job, _) in items:
                if not job.done():
                    continue
                with self._lock:
                    self._jobs.pop(fut, None)
                try:
                    result = job.result()
                except Exception as e:  # the job died (killed, out of time, out of memory)
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"job {job.job_id} failed: {str(e)[-2000:]}"))
                else:
                    if not fut.done():
                        fut.set_result(result)
            self._closed.wait(self.poll_s)

    def stop(self) -> None:
        """The sweep stops waiting (SIGTERM to it): each job not done yet runs on and files its record."""
        with self._lock:
            items = list(self._jobs.items())
            self._jobs.clear()
        for fut, (job, cfg) in items:
            if not fut.done():
                fut.set_result(stopped_result(cfg, f"job {job.job_id} runs on: the sweep stopped waiting for it"))

    def shutdown(self) -> None:
        self._closed.set()
        self._watcher.join(timeout=10)
