"""The command line, ``python -m scaling_lib <command>``: a thin face over the library."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _count(args) -> int:
    from .flops import Shape, count

    s = Shape(args.n_layer, args.d_model, args.n_ctx, args.vocab, args.d_ff or 0)
    out = count(s)
    if args.n_head and args.d_model % args.n_head:
        raise ValueError(f"d_model {args.d_model} is not divisible by n_head {args.n_head}")
    from .config import RunConfig
    from .arch import measured_forward_flops, params_counted

    cfg = RunConfig(n_layer=args.n_layer, d_model=args.d_model, n_ctx=args.n_ctx, tokenizer=f"bpe{args.vocab}"
                    if args.vocab != 256 else "byte", d_ff=args.d_ff or 0, n_head=args.n_head or 0)
    out["n_head"] = cfg.n_head
    out["params_counted"], out["params_total"] = params_counted(cfg)
    if args.measure:
        out["C_forward_measured"] = measured_forward_flops(cfg)
    print(json.dumps(out, indent=1))
    return 0


def _train(args) -> int:
    from .config import RunConfig
    from .runner import get_or_train
    from .store import Store

    try:
        d = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read config {args.config}: {e}") from e
    # a stored run record holds its config under "config", without the fields added since it was filed
    cfg = RunConfig.from_stored(d["config"]) if "config" in d else RunConfig.from_dict(d)
    store = Store(args.store) if args.store else Store()
    if args.force and store.has(cfg):
        store.path(cfg).unlink()
    rec = get_or_train(cfg, store, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, every rank returns the record: one prints it
        print(rec["path"])
    return 0


def _sweep(args) -> int:
    from . import preempt
    from .runner import machine_workers
    from .store import Store
    from .sweep import make_executor, run_sweep

    preempt.install()  # SIGTERM: the runs under way checkpoint and stop, nothing new starts, exit 0
    store = Store(args.store) if args.store else Store()
    cluster = {k: v for k, v in dict(cluster=args.cluster, folder=args.cluster_folder, partition=args.partition,
                                     time_min=args.time, gpus=args.gpus, mem_gb=args.mem_gb, cpus=args.cpus).items()
               if v is not None}
    workers = args.workers or machine_workers(args.threads)
    if args.runs_per_worker != 1 and args.executor != "local":
        raise ValueError("--runs-per-worker is the local pool's: it needs --executor local")
    executor = None if args.dry_run else make_executor(args.executor, workers=workers, threads=args.threads,
                                                       runs_per_worker=args.runs_per_worker, **cluster)
    try:
        results = run_sweep(args.name, args.profile, store=store, workers=workers, threads=args.threads,
                            deadline_s=args.deadline, dry_run=args.dry_run, max_N=args.max_n, min_N=args.min_n,
                            overrides=dict(_profile_entry(s) for s in args.set), executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()
    failed = [r for r in results if r.status == "failed"]
    if failed:
        print(f"{len(failed)} run(s) failed; their failed records are under {store.root}/.failed "
              "(run the same command again to retry them)", file=sys.stderr)
    return 0


def _profile_entry(text: str) -> tuple[str, object]:
    """'long_max_N=2_000_000' -> ('long_max_N', 2000000): a Python literal, or else the text itself."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE, not {text!r}")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


def _runs(args) -> int:
    from .store import Store

    store = Store(args.store) if args.store else Store()
    df = store.table(args.sweep, mixed_eval=True)  # a listing fits nothing: every evaluation version shows
    cols = ["path", "sweep", "arch", "N", "n_layer", "d_model", "seed", "batch_size", "data_tokens", "tokens",
            "lr", "status", "final_val_loss", "eval_version", "device_name"]
    if df.empty:
        print("[]" if args.json else f"no runs stored under {store.root}")
        return 0
    df = df[cols].sort_values(["sweep", "N", "lr", "seed"])
    if args.json:
        print(df.to_json(orient="records", indent=1))
    else:
        print(df.drop(columns=["path"]).to_string(index=False))
    return 0


def _progress(args) -> int:
    from .pages import CHAPTER_SWEEPS
    from .progress import sweep_progress
    from .store import Store

    df = sweep_progress(CHAPTER_SWEEPS, args.profile, Store(args.store) if args.store else None, checkpoints=True)
    if args.json:
        print(df.to_json(orient="records", indent=1))
    else:
        print(df.drop(columns=["chapters"]).to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    return 0


def _bench(args) -> int:
    from .bench import bench

    if getattr(args, "save", False) and args.depths is None:
        raise ValueError("--save files a latency-against-depth result: give it with --depths and --fixed-n")
    result = bench(args)
    if getattr(args, "save", False):
        from .depth import save_latency

        print(f"bench: filed {save_latency(result, args.store)}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=1))
    return 0


def _gpu_plan(args) -> int:
    from . import gpuplan
    from .store import Store

    rates = None
    if args.rates:
        try:
            d = json.loads(Path(args.rates).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read rates {args.rates}: {e}") from e
        rates = d.get("measured", d)
    result = gpuplan.sweep_plan(
        args.name, args.profile, store=Store(args.store) if args.store else Store(), max_N=args.max_n, min_N=args.min_n,
        overrides=dict(_profile_entry(s) for s in args.set), every=args.all, processes=_ints(args.processes),
        measure_processes=_ints(args.measure_processes) if args.measure_processes else (), device=args.measure_device,
        rates=rates, speedup=args.speedup, contention=args.contention, startup_s=args.startup_s,
        runs_per_worker=args.runs_per_worker, steps=args.steps, warmup=args.warmup, threads=args.threads,
        progress=not args.quiet)
    print(json.dumps(result, indent=1) if args.json else gpuplan.table(result))
    return 0


def _ints(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected integers joined by commas (1,2,4), not {text!r}") from None


def _book(args) -> int:
    from .book import build

    build(args.profile, execute=not args.no_execute, chapters=args.chapter or None)
    return 0


def _git_head() -> str | None:
    """The commit the library is at, which a filed prediction records (None outside a git checkout)."""
    import subprocess

    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent).stdout.strip() or None


def _predict(args) -> int:
    from . import predictions
    from .config import RunConfig
    from .plans import configs, is_tune_long, profile
    from .store import Store, runs_table
    from .store import FINISHED

    store = Store(args.store) if args.store else Store()
    p = profile(args.profile)
    if args.sweep == "warmup":
        return _predict_warmup(args, store)
    recs = [r for r in store.records(args.sweep) if r["status"] in FINISHED]
    if args.score:
        rec = predictions.load(args.score, store)
        table = runs_table(recs, budgets=True)  # every run: a long run is scored too
        if predictions.scope(rec) == "seeds":
            print(predictions.score_twins(rec, table).to_json(orient="records", indent=1))
        elif rec.get("levels"):
            print(json.dumps(dict(losses=json.loads(predictions.score(rec, table).to_json(orient="records")),
                                  levels=json.loads(predictions.score_levels(rec, table).to_json(orient="records"))),
                             indent=1))
        else:
            print(predictions.score(rec, table).to_json(orient="records", indent=1))
        return 0
    if args.runner_up is not None:
        return _predict_seeds(args, store, recs)
    new_sizes = {"between": args.between, "smaller": args.smaller}
    if not args.name or sum((args.min_n is not None, args.long, *(v is not None for v in new_sizes.values()))) != 1:
        raise ValueError("predict needs --name and one of --min-n, --long, --between or --smaller (or --score NAME)")
    # the fits read the tuned grids: a long run is no grid run (nor a point of the grid's budgets); but a prediction
    # of long runs reads the stored ones too: a longer round extrapolates from them, as the chapter's slices do
    every = runs_table(recs, budgets=True)
    table = every if args.long else runs_table(
        [r for r in recs if not is_tune_long(RunConfig.from_stored(r["config"]), p)], budgets=True)
    if args.source_max_n is not None:  # fit only on these sizes (e.g. the finished grids: see `rule --dry-run`)
        table = table[table["N"] <= args.source_max_n]
    planned = configs(args.sweep, args.profile, store)
    head = _git_head()
    if args.long:
        # a long run that a filed prediction predicts is left to it: a prediction is never redone
        taken = predictions.claimed(store)
        targets = [c for c in planned if is_tune_long(c, p) and c.key not in taken]
        rec = predictions.predict_longer(args.name, table, targets, store=store, bootstrap=args.bootstrap,
                                         seed=args.seed, commit=head, save=not args.dry_run,
                                         levels=dict(per_decade=args.per_decade, min_sizes=args.min_sizes))
    elif any(v is not None for v in new_sizes.values()):
        scope, listed = next((k, v) for k, v in new_sizes.items() if v is not None)
        sizes = {int(float(n)) for n in listed.split(",") if n.strip()}
        targets = [c for c in planned if c.N in sizes and not is_tune_long(c, p)]
        if not sizes or {c.N for c in targets} != sizes:
            raise ValueError(f"--{scope}: no planned run of the {args.sweep!r} sweep ({args.profile}) at N = "
                             f"{', '.join(f'{n:,}' for n in sorted(sizes - {c.N for c in targets})) or '(none given)'}"
                             "; the sizes must be in the profile's ladder (e.g. tune_ladder)")
        rec = predictions.predict_ladder(args.name, table, targets, store=store, bootstrap=args.bootstrap,
                                         seed=args.seed, commit=head, save=not args.dry_run, scope=scope,
                                         levels=dict(per_decade=args.per_decade, min_sizes=args.min_sizes),
                                         slices=every)  # the chapter's slices: the long runs included
    else:
        targets = predictions.targets_of([c for c in planned if not is_tune_long(c, p)], args.min_n)
        rec = predictions.predict_ladder(args.name, table, targets, store=store, bootstrap=args.bootstrap,
                                         seed=args.seed, commit=head, save=not args.dry_run)
    print(json.dumps(rec, indent=1))
    return 0


def _predict_seeds(args, store, recs) -> int:
    """`predict tune --runner-up N`: file the prediction that the runner-up seeds planned at size N sit against
    the runner-up's run on the grid's seed as the best rate's seeds sit against theirs (`predictions.predict_seeds`)."""
    from . import predictions
    from .config import RunConfig
    from .plans import configs, is_tune_long, profile
    from .store import runs_table

    if not args.name:
        raise ValueError("predict --runner-up needs --name")
    p = profile(args.profile)
    grid = [r for r in recs if not is_tune_long(RunConfig.from_stored(r["config"]), p)]
    if not grid:
        raise ValueError(f"no stored grid run of the {args.sweep!r} sweep under {store.root}: a runner-up's seeds are "
                         "predicted from its grid")
    table = runs_table(grid, budgets=True)
    N, grid_seed = int(args.runner_up), table["seed"].min()
    seeded = set(table.loc[(table["N"] == N) & (table["seed"] != grid_seed), "lr"])
    targets = [c for c in configs(args.sweep, args.profile, store) if c.N == N and not is_tune_long(c, p)
               and not store.has(c) and c.seed != grid_seed and c.lr not in seeded]
    if not targets:
        raise ValueError(f"no runner-up seeds of the {args.sweep!r} sweep ({args.profile}) planned and not stored at "
                         f"N = {N:,}: the plan seeds a runner-up only where the best rate's seeds lift its mean "
                         "above it (plans._runner_up_seeds)")
    rec = predictions.predict_seeds(args.name, table, targets, store=store, commit=_git_head(),
                                    save=not args.dry_run)
    print(json.dumps(rec, indent=1))
    return 0


def _predict_warmup(args, store) -> int:
    """`predict warmup`: file (or score) the prediction that the warmup sweep's run at one size (--min-n) closes
    the gap between the fixed-rule ladder's run and the tuned grid's run of nearly the same rate
    (`predictions.predict_warmup`), or score one."""
    from . import ladder, predictions
    from .plans import TUNE_GRID, configs, warmup_twin
    from .store import FINISHED, runs_table
    from .sweep import load_sweep

    def table(name, **kw):  # the stored runs only: a prediction trains nothing
        return runs_table([r for r in load_sweep(name, args.profile, store, train=False, **kw)[0]
                           if r["status"] in FINISHED], budgets=True)

    if args.score:
        import pandas as pd

        both = pd.concat([table("warmup"), table("tune", overrides=TUNE_GRID)], ignore_index=True)
        print(predictions.score_twins(predictions.load(args.score, store), both).to_json(orient="records", indent=1))
        return 0
    if not args.name or args.min_n is None:
        raise ValueError("predict warmup needs --name and --min-n (the size whose warmup run it predicts)")
    targets = [c for c in configs("warmup", args.profile, store) if c.N == int(args.min_n)]
    if not targets:
        raise ValueError(f"no planned run of the warmup sweep ({args.profile}) at N = {int(args.min_n):,}: the size "
                         "must be in the profile's warmup_ladder, its tuned grid finished")
    gaps = ladder.same_rate_gaps(table("ladder"), table("tune", overrides=TUNE_GRID))
    head = _git_head()
    rec = predictions.predict_warmup(args.name, gaps[gaps["N"] == int(args.min_n)], targets,
                                     [warmup_twin(c) for c in targets], store=store, commit=head,
                                     save=not args.dry_run)
    print(json.dumps(rec, indent=1))
    return 0


def _rule(args) -> int:
    from . import tuning
    from .config import RunConfig
    from .plans import configs, is_tune_long, profile
    from .store import Store, runs_table
    from .store import FINISHED

    store = Store(args.store) if args.store else Store()
    path = store.root / tuning.RULE_FILE
    if path.exists() and not (args.replace or args.dry_run):
        raise ValueError(f"{path} exists; --replace refits it (the sweeps planned from it keep their keys where "
                         "their rates stay on the same quarter-octave), --dry-run shows the refit")
    p = profile(args.profile)
    # the grids alone: a long run (one rate, past the grid's budgets) is no grid, and no grid run still planned
    recs = [r for r in store.records(args.sweep) if r["status"] in (*FINISHED, "diverged")
            and not is_tune_long(RunConfig.from_stored(r["config"]), p)]
    if not recs:
        raise ValueError(f"no stored run of the {args.sweep!r} sweep under {store.root}")
    table = runs_table(recs, budgets=True)
    grid_seed = int(table["seed"].min())
    missing = [c.N for c in configs(args.sweep, args.profile, store)
               if c.seed == grid_seed and not store.has(c) and not is_tune_long(c, p)]
    rule = tuning.fit_rule_on_complete(table, missing, max_n=args.max_n, bootstrap=args.bootstrap, seed=args.seed)
    out = rule.to_dict()
    out["sources"] = len(rule.sources)  # the keys are in the file; their count is enough here
    if not args.dry_run:
        out["path"] = str(rule.save(path))
    print(json.dumps(out, indent=1))
    return 0


def _reference(args) -> int:
    from .data import load_corpus
    from .ngram import reference_entropies, store_reference

    ref = reference_entropies(load_corpus(args.corpus, args.tokenizer))
    path = store_reference(ref, Path(args.store) if args.store else None)
    print(json.dumps(dict(ref, path=str(path)), indent=1))
    return 0


def _fit(args) -> int:
    from . import fit

    return fit.cli(args)


def _allocate(args) -> int:
    from . import allocation

    return allocation.cli(args)


def _size_bounds(p: argparse.ArgumentParser, verb: str) -> None:
    """--max-n and --min-n: the sizes of a sweep that a command takes, by non-embedding parameters."""
    for flag, most in (("--max-n", "most"), ("--min-n", "least")):
        p.add_argument(flag, type=float, help=f"{verb} only the sizes with at {most} this many non-embedding parameters")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scaling_lib", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("count", help="Kaplan's Table 1 counts for one shape, as JSON")
    p.add_argument("--n-layer", type=int, required=True)
    p.add_argument("--d-model", type=int, required=True)
    p.add_argument("--n-ctx", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--d-ff", type=int, default=0, help="default 4 d_model")
    p.add_argument("--n-head", type=int, default=0)
    p.add_argument("--measure", action="store_true", help="also count the forward FLOPs with torch's FLOP counter")
    p.set_defaults(fn=_count)

    p = sub.add_parser("train", help="train one run from a JSON config or a stored record; prints the record path")
    p.add_argument("--config", required=True)
    p.add_argument("--store", help="run store root (default: runs/)")
    p.add_argument("--force", action="store_true", help="retrain even if stored")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=_train)

    p = sub.add_parser("sweep", help="run (or resume) a named sweep into the store")
    p.add_argument("name", help="lr, ladder, data, shape, lstm, several joined by commas (data,lstm), or all")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="local pool size (default: as many as the cores allow)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--runs-per-worker", type=int, default=1, metavar="K",
                   help="runs a local worker trains before a fresh process replaces it (default 1; 0: no limit, "
                        "a few long-lived workers packed onto one GPU, see gpu-plan)")
    p.add_argument("--deadline", type=float, help="seconds after which the sweep stops (it resumes next time)")
    _size_bounds(p, "train")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="replace a profile entry for this sweep, e.g. --set long_max_N=2_000_000 (repeatable)")
    p.add_argument("--store")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--executor", choices=("local", "inline", "submitit"), default="local",
                   help="local: a process pool on this machine; submitit: one Slurm job a run")
    g = p.add_argument_group("submitit (with --executor submitit)")
    g.add_argument("--cluster", choices=("slurm", "local"), help="slurm (default), or submitit's local executor")
    g.add_argument("--partition")
    g.add_argument("--time", type=int, help="each job's time limit in minutes (default 240)")
    g.add_argument("--gpus", type=int, help="GPUs a job (default 0)")
    g.add_argument("--mem-gb", type=float)
    g.add_argument("--cpus", type=int, help="CPUs a job (default: --threads)")
    g.add_argument("--cluster-folder", help="job scripts and logs (default $SCALING_LIB_CACHE/submitit)")
    p.set_defaults(fn=_sweep)

    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--sweep")
    p.add_argument("--store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_runs)

    p = sub.add_parser("progress", help="each sweep's runs stored and still planned, and the worker-hours left "
                       "at the rate of its stored runs")
    p.add_argument("--profile", default="book", help="the profile whose planned grids are counted (default book)")
    p.add_argument("--store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_progress)

    p = sub.add_parser("bench", help="training throughput and the measured matmul peak; with --depths and --fixed-n, "
                       "training and generation latency against depth at a fixed N; as JSON")
    p.add_argument("--n-layer", type=int)
    p.add_argument("--d-model", type=int)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--n-ctx", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "both"), default="both")
    g = p.add_argument_group("latency against depth (with --depths and --fixed-n; --steps repeats each timing, "
                             "--dtype both means fp32)")
    g.add_argument("--depths", metavar="L,L,...", help="depths to time at a fixed N, e.g. 1,2,4,8,16")
    g.add_argument("--fixed-n", type=float, metavar="N", help="the parameter count every depth is sized to")
    g.add_argument("--count", choices=("N", "N_total"), default="N", help="what --fixed-n counts (default N, "
                   "non-embedding)")
    g.add_argument("--head-size", type=int, default=32, help="d_model moves in steps of this (default 32)")
    g.add_argument("--gen-tokens", type=int, default=32, help="tokens generated per timing (default 32)")
    g.add_argument("--gen-batches", default="1,32", metavar="B,B,...", help="generation batch sizes (default 1,32)")
    g.add_argument("--prompt", type=int, default=16, help="prompt tokens before generation (default 16)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    g.add_argument("--save", action="store_true", help="also file the result under <runs>/latency/ (one file per "
                   "device, N, head size and threads), where the depth chapter reads it")
    g.add_argument("--store", help="the runs root to file under (default $SCALING_LIB_RUNS or runs/)")
    p.set_defaults(fn=_bench)

    p = sub.add_parser("gpu-plan", help="measure a sweep's shapes here and predict its device time, packed "
                       "into P processes on one device (a table, or --json)")
    p.add_argument("name", help="a sweep, as for sweep (ladder, lr, data, ...; several joined by commas)")
    p.add_argument("--profile", default="gpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="replace a profile entry, as for sweep")
    _size_bounds(p, "plan")
    p.add_argument("--all", action="store_true", help="plan every run of the sweep, not only what the store lacks")
    p.add_argument("--store")
    p.add_argument("--processes", default="1,2,4,8", help="the pool sizes P to plan (default 1,2,4,8)")
    p.add_argument("--runs-per-worker", type=int, default=0, metavar="K",
                   help="as for sweep: 0 (default) workers for the whole sweep, 1 a fresh process a run")
    p.add_argument("--measure-processes", metavar="K,K", help="also time every shape in K processes at once "
                   "(the device's sharing, measured), e.g. 4,8")
    p.add_argument("--measure-device", choices=("cpu", "cuda"),
                   help="where to measure (default: the runs' device if this machine has it, else the cpu)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps a shape (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the measuring process (as sweep's)")
    p.add_argument("--rates", metavar="FILE", help="measure nothing: the rates of a gpu-plan --json made on the device")
    p.add_argument("--speedup", type=float, help="assumed: the runs' device over the measuring one, in tokens/s "
                   "(needed when they differ)")
    p.add_argument("--contention", type=float, default=1.0, help="assumed where sharing was not measured: each of "
                   "P processes runs at 1/(1 + c (P-1)) of a lone one's speed (default 1: no gain, an upper bound)")
    p.add_argument("--startup-s", type=float, default=5.0, help="assumed: seconds a fresh worker takes to start "
                   "(imports, CUDA context; default 5)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(fn=_gpu_plan)

    p = sub.add_parser("book", help="execute every notebook with papermill and build the book")
    p.add_argument("--profile", default="book")
    p.add_argument("--no-execute", action="store_true")
    p.add_argument("--chapter", action="append")
    p.set_defaults(fn=_book)

    p = sub.add_parser("predict", help="file a prediction of a sweep's largest sizes before they are trained "
                       "(runs/predictions/NAME.json), or score one")
    p.add_argument("sweep", help="the tuned sweep, e.g. tune; or warmup, for a warmup run against its twin in the "
                   "tuned grid and the fixed-rule ladder (with --min-n, the size)")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--name", help="the prediction's name (a file that exists is never overwritten)")
    p.add_argument("--min-n", type=float, help="predict the planned sizes with at least this many parameters, "
                   "from the stored sizes below them")
    p.add_argument("--source-max-n", type=float, help="fit only on the stored sizes with at most this many "
                   "parameters (default: every stored size below the targets)")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--long", action="store_true", help="predict the long runs of the tuned ladder (trained past the "
                   "grid's budgets, `tune_long_sizes`) from their own sizes' grids, and where the Kaplan-or-Chinchilla "
                   "chapter's IsoFLOP vertices move once they land")
    p.add_argument("--between", metavar="N,N,...", help="predict new sizes of the ladder inside the stored range "
                   "(non-embedding parameters, e.g. 1536,6144) from every other stored size, and where the IsoFLOP "
                   "vertices move once they land")
    p.add_argument("--smaller", metavar="N,N,...", help="the same for new sizes below every stored one (e.g. 432): "
                   "the laws extrapolate down")
    p.add_argument("--runner-up", metavar="N", type=float, help="predict the runner-up seeds planned at size N "
                   "(plans._runner_up_seeds): that each sits against the runner-up's run on the grid's seed as the best "
                   "rate's run at that seed sits against its own")
    p.add_argument("--per-decade", type=int, default=3, help="with --long, --between or --smaller: IsoFLOP levels a "
                   "decade (the chapter's 3)")
    p.add_argument("--min-sizes", type=int, default=3, help="with --long, --between or --smaller: sizes a level needs "
                   "(the chapter's 3)")
    p.add_argument("--dry-run", action="store_true", help="print the prediction without filing it")
    p.add_argument("--score", metavar="NAME", help="score a filed prediction against the stored runs")
    p.add_argument("--store")
    p.set_defaults(fn=_predict)

    p = sub.add_parser("rule", help="fit the learning-rate rule LR*(N, D) to a tuned sweep's finished grids and "
                       "file it (runs/rules/lr.json), where the sweeps planned after it read their rates")
    p.add_argument("sweep", nargs="?", default="tune", help="the tuned sweep (default tune)")
    p.add_argument("--profile", default="cpu", help="the profile whose planned grid runs count as unfinished")
    p.add_argument("--max-n", type=float, help="fit only the sizes with at most this many non-embedding parameters")
    p.add_argument("--bootstrap", type=int, default=500, help="size resamples for the intervals (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replace", action="store_true", help="refit a rule that is already filed")
    p.add_argument("--dry-run", action="store_true", help="print the rule without filing it")
    p.add_argument("--store")
    p.set_defaults(fn=_rule)

    p = sub.add_parser("reference", help="the n-gram reference lines of a corpus, filed under runs/reference/")
    p.add_argument("--corpus", default="books")
    p.add_argument("--tokenizer", default="bpe4096")
    p.add_argument("--store", help="runs root (default: runs/)")
    p.set_defaults(fn=_reference)

    p = sub.add_parser("fit", help="fit a scaling law to a CSV, as JSON")
    from . import fit

    fit.add_cli_arguments(p)
    p.set_defaults(fn=_fit)

    p = sub.add_parser("allocate", help="compute-optimal N_opt ∝ C^a, D_opt ∝ C^b from a CSV "
                       "(Hoffmann et al.'s approach 1, 2 or 3), as JSON")
    from . import allocation

    allocation.add_cli_arguments(p)
    p.set_defaults(fn=_allocate)

    p = sub.add_parser("bcrit", help="fit the critical batch S = S_min (1 + B_crit/B) to a CSV, as JSON")
    from . import batch

    batch.add_cli_arguments(p)
    p.set_defaults(fn=batch.cli)

    p = sub.add_parser("plan", help="compute-optimal N, D (B, S, L) for a budget under a scaling law, as JSON")
    from . import planner

    planner.add_cli_arguments(p)
    p.set_defaults(fn=planner.cli)

    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, LookupError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: stored runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
