"""The tuned ladder's plan: its sizes, its prior, and a grid that grows at a winning edge."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scaling_lib import laws, plans
from scaling_lib.config import RunConfig
from scaling_lib.plans import LR_PRIOR, configs, cost, lattice_lr, lr_prior
from scaling_lib.store import Store, prefer_cpu, runs_table
from scaling_lib.sweep import load_by_machine

def test_the_tuned_ladder_spans_three_decades_in_small_steps_at_the_top():
    N = sorted(RunConfig(n_layer=L, d_model=d).N for L, d in plans.LADDER_TUNED)
    assert len(N) >= 10 and N[0] <= 768 and N[-1] >= 1.5e6 and N[-1] / N[0] >= 1e3
    top = [n for n in N if n >= N[-1] / 10]
    assert len(top) >= 5 and max(b / a for a, b in zip(top, top[1:])) <= 2.1


def test_the_pinned_prior_is_the_fit_of_the_stored_lr_sweep():
    runs, _ = load_by_machine("lr", "book")
    t = prefer_cpu(runs_table([r for m in runs.values() for r in m]), on=["n_layer", "d_model", "lr"])
    t = t[np.isfinite(t["final_val_loss"])]
    best = t.groupby("N").apply(lambda g: laws.parabola_minimum(g["lr"].to_numpy(), g["final_val_loss"].to_numpy()),
                                include_groups=False)
    b, log_a = np.polyfit(np.log(best.index.to_numpy(float)), np.log(best.to_numpy()), 1)
    assert b == pytest.approx(LR_PRIOR["b"], abs=1e-3) and math.exp(log_a) == pytest.approx(LR_PRIOR["A"], rel=1e-3)


def _store_losses(store: Store, cfgs, loss_of_lr):
    for c in cfgs:
        store.save(dict(schema=2, key=c.key, name=c.name, sweep=c.sweep, config=c.to_dict(), status="ok",
                        final=dict(val_loss=loss_of_lr(c.lr))))


def test_the_tuned_grid_grows_at_a_winning_edge_then_adds_seeds_at_the_best(tmp_path, runs_env):
    s = Store(tmp_path)
    first = [c for c in configs("tune", "smoke", s) if c.d_model == 8]
    assert len(first) == 3 and all(c.seed == 0 for c in first)
    lrs = sorted(c.lr for c in first)
    assert lrs[1] / lrs[0] == pytest.approx(2) and lrs[2] / lrs[1] == pytest.approx(2)
    assert lrs[0] <= lr_prior(first[0].N) <= lrs[2]
    _store_losses(s, first, lambda lr: -lr)  # the largest rate wins: the grid grows upwards
    second = [c for c in configs("tune", "smoke", s) if c.d_model == 8]
    assert sorted(c.lr for c in second) == [*lrs, pytest.approx(2 * lrs[2])] and {c.seed for c in second} == {0}
    best = lrs[2]
    _store_losses(s, [c for c in second if c.lr > lrs[2]], lambda lr: 0.0)  # the new edge loses
    third = [c for c in configs("tune", "smoke", s) if c.d_model == 8]
    seeds = [c for c in third if c.seed != 0]
    assert [c.lr for c in seeds] == [best] and {c.seed for c in seeds} == set(plans.PROFILES["smoke"]["tune_seeds"]) - {0}


def test_the_runner_up_gets_the_seeds_once_the_best_rates_seeds_lift_its_mean_above_it(tmp_path, runs_env):
    s = Store(tmp_path)
    grid = sorted((c for c in configs("tune", "smoke", s) if c.d_model == 8), key=lambda c: c.lr)
    lo, mid, hi = (c.lr for c in grid)
    on_grid = {lo: 0.3, mid: 0.0, hi: 0.6}  # the centre wins, the lowest rate is the runner-up
    _store_losses(s, grid, on_grid.get)
    seeds = [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.seed != 0]
    assert {c.lr for c in seeds} == {mid}  # no runner-up seeds until the best's have landed
    _store_losses(s, seeds, lambda lr: 0.4)  # the best's mean (0.2 with smoke's two seeds) stays below 0.3
    assert {c.lr for c in configs("tune", "smoke", s) if c.d_model == 8 and c.seed != 0} == {mid}
    _store_losses(s, seeds, lambda lr: 1.0)  # now its mean (0.5) is above the runner-up's run
    planned = [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.seed != 0]
    runner_up = [c for c in planned if c.lr == lo]
    assert {c.seed for c in runner_up} == set(plans.PROFILES["smoke"]["tune_seeds"]) - {0}
    assert {c.lr for c in planned} == {lo, mid}  # the third rate is not seeded
    assert all(c.tokens == grid[0].tokens for c in runner_up)


def test_a_rate_past_the_edge_is_trained_where_the_seed_means_put_the_best_at_the_grid_s_edge(tmp_path, runs_env):
    s = Store(tmp_path)
    grid = sorted((c for c in configs("tune", "smoke", s) if c.d_model == 8), key=lambda c: c.lr)
    lo, mid, hi = (c.lr for c in grid)
    _store_losses(s, grid, {lo: 0.3, mid: 0.0, hi: 0.6}.get)  # the centre wins on the grid's seed
    _store_losses(s, [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.seed != 0], lambda lr: 1.0)
    runner_up = [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.seed != 0 and c.lr == lo]
    assert runner_up and not [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.lr < lo]
    _store_losses(s, runner_up, lambda lr: 0.1)  # by the seed means the lowest rate is now the best: an edge
    past = [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.lr < lo]
    assert [c.lr for c in past] == [pytest.approx(lo / 2)] and past[0].seed == 0 and past[0].tokens == grid[0].tokens
    _store_losses(s, past, lambda lr: 0.9)  # it loses: the best is inside, nothing more is planned
    assert [c.lr for c in configs("tune", "smoke", s) if c.d_model == 8 and c.lr < lo] == [pytest.approx(lo / 2)]
    _store_losses(s, past, lambda lr: 0.0)  # had it won, the next rate past it
    assert sorted(c.lr for c in configs("tune", "smoke", s) if c.d_model == 8 and c.lr < lo) == [
        pytest.approx(lo / 4), pytest.approx(lo / 2)]


def test_the_tuned_ladder_foresees_its_seeds_until_a_grid_is_finished(tmp_path, runs_env):
    s = Store(tmp_path)
    seeds = set(plans.PROFILES["smoke"]["tune_seeds"]) - {0}
    before = plans.foreseen("tune", "smoke", s)
    sizes = {(c.n_layer, c.d_model) for c in before}
    assert sizes == set(plans.PROFILES["smoke"]["tune_ladder"]) and {c.seed for c in before} == seeds
    grid = [c for c in configs("tune", "smoke", s) if c.d_model == 8]
    centre = sorted(c.lr for c in grid)[1]
    assert {c.lr for c in before if c.d_model == 8} == {centre}  # at the grid's centre rate
    _store_losses(s, grid, lambda lr: abs(math.log(lr / centre)))  # the centre wins: the grid is finished
    after = plans.foreseen("tune", "smoke", s)
    assert {c.d_model for c in after} == {16}  # 8's seeds are planned now, not foreseen
    planned = [c for c in configs("tune", "smoke", s) if c.d_model == 8 and c.seed != 0]
    assert {c.key for c in planned} == {c.key for c in before if c.d_model == 8}  # and they are the ones foreseen
    assert plans.foreseen("ladder", "smoke", s) == []  # a sweep planned at once foresees nothing


def test_the_lattice_is_shared_by_every_size():
    assert lattice_lr(0) == 0.01 and lattice_lr(-2) == 0.0025 and lattice_lr(3) == 0.08


def test_every_profile_entry_has_a_type_and_holds_it():
    for name in plans.PROFILES:
        p = plans.profile(name)
        assert set(p) <= set(plans.ENTRY_TYPES), sorted(set(p) - set(plans.ENTRY_TYPES))


@pytest.mark.parametrize("entry, value, words", [
    ("tokens", 1e6, "must be an integer"),
    ("tune_ladder", ((1, 8, 3),), "pairs"),
    ("tune_longer", ((1, 8),), "triples"),
    ("lr_grid", (1e-3, -1.0), "positive rates"),
    ("train_missing", "yes", "True or False"),
])
def test_an_override_of_the_wrong_type_is_a_clear_error(entry, value, words):
    with pytest.raises(ValueError, match=words) as e:
        plans.profile("smoke", {entry: value})
    assert repr(entry) in str(e.value)


def test_the_tuned_grid_grows_towards_every_edge_that_wins_at_some_budget(tmp_path, runs_env):
    s = Store(tmp_path)
    first = sorted((c for c in configs("tune", "smoke", s) if c.d_model == 8), key=lambda c: c.lr)
    lo, mid, hi = (c.lr for c in first)
    short, long_ = first[0].budgets[0], first[0].tokens

    def rec(c, at_short, at_long):
        return dict(schema=2, key=c.key, name=c.name, sweep=c.sweep, config=c.to_dict(), status="ok", tokens=long_,
                    final=dict(val_loss=at_long), budgets=[dict(tokens=short, val_loss=at_short, status="ok"),
                                                           dict(tokens=long_, val_loss=at_long, status="ok")])

    # the short budget prefers the largest rate, the longest the smallest: the grid grows both ways
    for c, (a, b) in zip(first, [(3.0, 1.0), (2.0, 2.0), (1.0, 3.0)]):
        s.save(rec(c, a, b))
    grown = sorted(c.lr for c in configs("tune", "smoke", s) if c.d_model == 8)
    assert grown == [pytest.approx(lo / 2), lo, mid, hi, pytest.approx(2 * hi)]
    assert all(c.seed == 0 for c in configs("tune", "smoke", s) if c.d_model == 8)  # no seeds while an edge wins


def test_a_rate_added_past_an_edge_that_wins_only_early_trains_only_as_far_as_it_must(tmp_path, runs_env):
    budgets = {"tune_tokens": 40_960, "tune_budgets": (5_120, 10_240, 20_480)}
    s = Store(tmp_path)
    first = sorted((c for c in configs("tune", "smoke", s, budgets) if c.d_model == 8), key=lambda c: c.lr)
    tps = first[0].tokens_per_step
    steps = [b // tps * tps for b in first[0].all_budgets]  # the budgets as a run stores them: whole steps

    def save(c, losses):
        s.save(dict(schema=2, key=c.key, name=c.name, sweep=c.sweep, config=c.to_dict(), status="ok",
                    tokens=c.tokens, final=dict(val_loss=losses[-1]),
                    budgets=[dict(tokens=t, val_loss=v, status="ok") for t, v in zip(steps, losses)]))

    # the lowest rate wins at the two shortest budgets only, the centre at the others
    for c, losses in zip(first, [(1.0, 1.0, 3.0, 3.0), (2.0, 2.0, 2.0, 2.0), (3.0, 3.0, 3.0, 3.0)]):
        save(c, losses)
    grown = sorted((c for c in configs("tune", "smoke", s, budgets) if c.d_model == 8), key=lambda c: c.lr)
    new = grown[0]
    assert len(grown) == 4 and new.lr == pytest.approx(first[0].lr / 2)
    # to the budget after the last that the edge won (20,480), not to the longest; with the grid's warmup
    assert new.tokens == 20_480 and new.budgets == (5_120, 10_240) and new.warmup_tokens == first[0].warmup_tokens
    assert plans.cost([new]) < plans.cost([first[0]]) / 1.9
    # it loses where it was trained: the grid is finished, its seeds go to the rate best at the longest budget
    save(new, (1.5, 1.5, 3.5))
    done = [c for c in configs("tune", "smoke", s, budgets) if c.d_model == 8]
    assert {c.seed for c in done if c.lr == first[1].lr} == set(plans.PROFILES["smoke"]["tune_seeds"])
    assert [c.key for c in done if c.seed == 0 and c.lr == new.lr] == [new.key]


def test_a_full_length_run_of_an_added_rate_stands_in_for_the_shorter_one(tmp_path, runs_env):
    budgets = {"tune_tokens": 40_960, "tune_budgets": (5_120, 10_240, 20_480)}
    s = Store(tmp_path)
    first = sorted((c for c in configs("tune", "smoke", s, budgets) if c.d_model == 8), key=lambda c: c.lr)
    steps = [b // first[0].tokens_per_step * first[0].tokens_per_step for b in first[0].all_budgets]
    for c, losses in zip(first, [(1.0, 3.0, 3.0, 3.0), (2.0, 2.0, 2.0, 2.0), (3.0, 3.0, 3.0, 3.0)]):
        s.save(dict(schema=2, key=c.key, name=c.name, sweep=c.sweep, config=c.to_dict(), status="ok",
                    tokens=c.tokens, final=dict(val_loss=losses[-1]),
                    budgets=[dict(tokens=t, val_loss=v, status="ok") for t, v in zip(steps, losses)]))
    full = first[0].replace(lr=first[0].lr / 2)  # as the grid planned such a rate before (the whole length)
    s.save(dict(schema=2, key=full.key, name=full.name, sweep=full.sweep, config=full.to_dict(), status="ok",
                tokens=full.tokens, final=dict(val_loss=4.0),
                budgets=[dict(tokens=t, val_loss=v, status="ok") for t, v in zip(steps, (1.5, 3.5, 3.5, 4.0))]))
    planned = [c for c in configs("tune", "smoke", s, budgets) if c.d_model == 8 and c.seed == 0]
    assert full.key in {c.key for c in planned} and all(c.tokens == full.tokens for c in planned)


def test_the_tuned_shapes_add_half_and_twice_the_rule_rate_and_keep_the_scan(tmp_path):
    from scaling_lib.plans import PROFILES, ladder_lr

    cfgs = configs("shape", "cpu", Store(tmp_path))
    scan = [c for c in cfgs if c.lr == ladder_lr(c.N)]
    assert len(scan) == len(PROFILES["cpu"]["shapes"])  # every shape once at the rule's rate
    for shape in PROFILES["cpu"]["shape_lr_tuned"]:
        mine = sorted((c for c in cfgs if c.n_layer == shape["n_layer"] and c.d_model == shape["d_model"]
                       and c.d_ff in (0, 4 * c.d_model)), key=lambda c: c.lr)
        lr = ladder_lr(mine[0].N)
        assert [c.lr for c in mine] == [round(lr / 2, 6), lr, round(lr * 2, 6)]
    assert len(set(cfgs)) == len(cfgs)
    assert all(c.lr == ladder_lr(c.N) for c in configs("shape", "gpu", Store(tmp_path)))


# --- short contexts and recurrent transformers (Kaplan Fig. 17, 21) ------------------------------
def test_the_smoke_context_sweep_holds_the_batch_in_tokens_and_stores_positions(tmp_path):
    p = plans.PROFILES["smoke"]
    cfgs = configs("context", "smoke", Store(tmp_path))
    assert len(cfgs) == len(p["context_ladder"]) * len(p["context_n_ctx"]) and len({c.key for c in cfgs}) == len(cfgs)
    assert {c.n_ctx for c in cfgs} == set(p["context_n_ctx"]) and min(p["context_n_ctx"]) < p["n_ctx"]
    assert {c.tokens_per_step for c in cfgs} == {p["batch_size"] * p["n_ctx"]}  # same steps, same schedule
    assert {c.tokens for c in cfgs} == {p["context_tokens"]}
    assert all(c.eval_per_position and c.eval_version == 2 and c.schedule == "wsd" and c.arch == "gpt" for c in cfgs)
    for N in {c.N for c in cfgs}:  # both contexts of a size at one rate: the pilot's (smoke has no stored rule)
        assert {c.lr for c in cfgs if c.N == N} == {plans.ladder_lr(N)}
    assert all(c.sweep == "context" for c in cfgs)


def test_the_smoke_recur_sweep_pairs_each_size_with_its_recurrent_versions(tmp_path):
    p = plans.PROFILES["smoke"]
    cfgs = configs("recur", "smoke", Store(tmp_path))
    assert len(cfgs) == len(p["recur_ladder"]) * len(p["recur_counts"]) >= 8 and len({c.key for c in cfgs}) == len(cfgs)
    assert {(c.arch, c.n_recur) for c in cfgs} == {("gpt", 1), *(("ut", r) for r in p["recur_counts"] if r > 1)}
    for n_layer, d_model in p["recur_ladder"]:
        same = [c for c in cfgs if (c.n_layer, c.d_model) == (n_layer, d_model)]
        assert len({c.N for c in same}) == 1 and len({c.lr for c in same}) == 1 and len({c.warmup_tokens for c in same}) == 1
    assert all(c.eval_version == 2 and c.schedule == "wsd" for c in cfgs)
    assert cost([c for c in cfgs if c.n_recur > 1]) > cost([c for c in cfgs if c.n_recur == 1])  # reuse costs compute


@pytest.mark.parametrize("name", ["cpu", "book", "gpu"])
@pytest.mark.parametrize("sweep_name", ["context", "recur"])
def test_without_a_stored_rule_the_cpu_sweeps_name_the_missing_file(tmp_path, name, sweep_name):
    from scaling_lib.tuning import RULE_FILE

    with pytest.raises(plans.MissingRule) as e:
        configs(sweep_name, name, Store(tmp_path))
    assert str(tmp_path / RULE_FILE) in str(e.value) and repr(sweep_name) in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_the_cpu_sweeps_take_their_rates_from_the_stored_rule(tmp_path, save_rule):
    rule = plans.LRRule.load(save_rule())
    p = plans.PROFILES["cpu"]
    context, recur = configs("context", "cpu", Store(tmp_path)), configs("recur", "cpu", Store(tmp_path))
    for c in context + recur:
        exact = float(rule(c.N, c.tokens))
        assert abs(math.log2(c.lr / exact)) <= 1 / 8 + 1e-9  # on the lattice of quarter octaves
        k = 4 * math.log2(c.lr / plans.LR_LATTICE)
        assert k == pytest.approx(round(k), abs=1e-4)
    # Fig. 21: 3 sizes or more at n_ctx 32 and 128, one token budget; Fig. 17: 4 sizes or more at 2 counts or more
    assert len({c.N for c in context}) >= 3 and {c.n_ctx for c in context} == {32, 128} and len(context) == 6
    assert {c.tokens for c in context} == {p["context_tokens"]} and {c.tokens_per_step for c in context} == {4096}
    assert len({c.N for c in recur}) >= 4 and len({c.n_recur for c in recur}) >= 2 and len(recur) == 12
    # a few runs, not a sweep: together under a tenth of the tuned ladder's cost
    tune = configs("tune", "cpu", Store(tmp_path))
    assert cost(context) + cost(recur) < 0.1 * cost(tune)
    # a refit that moves the rate by a few percent leaves the rate (and the runs' keys) put
    for f in (0.95, 1.0, 1.05):
        save_rule(tmp_path / str(f), A=0.01 * f, a=0.0, b=0.0)
        assert plans.rule_lr(p, Store(tmp_path / str(f)), 1e4, 1e6, "recur") == plans.lattice_lr(0)


def test_the_smoke_profile_reads_a_rule_when_told_where(tmp_path, save_rule):
    from scaling_lib.tuning import RULE_FILE

    rule = plans.LRRule.load(save_rule(A=0.02, a=0.0, b=0.0))  # LR* = 0.02 everywhere
    cfgs = configs("recur", "smoke", Store(tmp_path), {"lr_rule_file": RULE_FILE})
    assert {c.lr for c in cfgs} == {plans.lattice_lr(1)} and plans.lattice_lr(1) == pytest.approx(float(rule(1e3, 1e4)))
    with pytest.raises(ValueError, match="'lr_rule_file'"):
        plans.profile("smoke", {"lr_rule_file": 3})


def test_all_leaves_out_the_sweeps_that_wait_for_the_rule_and_naming_one_says_why(tmp_path):
    cfgs = configs("all", "cpu", Store(tmp_path))  # no rule under this empty store
    assert cfgs and not {"context", "recur"} & {c.sweep for c in cfgs}
    with pytest.raises(plans.MissingRule):
        configs("recur", "cpu", Store(tmp_path))


# --- the tuned ladder's long runs ------------------------------------------------------------------
LONG = {"tune_long_sizes": ((1, 8),), "tune_long_tokens": 163_840}


def _finish_grid(store: Store, cfgs):
    """File every config with the middle rate of its size's grid best at every budget (a finished grid)."""
    for c in cfgs:
        mid = sorted(x.lr for x in cfgs if x.N == c.N)[1]
        loss = 3.0 + abs(math.log2(c.lr / mid))
        store.save(dict(schema=2, key=c.key, name=c.name, sweep=c.sweep, config=c.to_dict(), status="ok",
                        tokens=c.tokens, final=dict(val_loss=loss),
                        budgets=[dict(tokens=b, val_loss=loss, status="ok") for b in c.all_budgets]))


def test_a_long_run_continues_a_finished_grid_past_its_budgets(tmp_path, runs_env):
    s = Store(tmp_path)
    p = plans.profile("smoke", LONG)
    first = configs("tune", "smoke", s, LONG)
    assert first == configs("tune", "smoke", s)  # no long run while the grid is not finished
    _finish_grid(s, first)
    planned = configs("tune", "smoke", s, LONG)
    long = [c for c in planned if plans.is_tune_long(c, p)]
    assert len(long) == 1
    run = long[0]
    best = next(c for c in first if c.d_model == 8 and c.lr == sorted(x.lr for x in first if x.d_model == 8)[1])
    assert (run.n_layer, run.d_model, run.lr, run.seed, run.schedule) == (1, 8, best.lr, 0, "wsd")
    assert run.warmup_tokens == best.warmup_tokens  # the stable phase is the grid run's own
    assert run.tokens == 163_840 and run.budgets == (81_920,)  # the doublings past tune_tokens, none at or below
    assert run == plans.tune_long_run(best, p) and run.key not in {c.key for c in first}
    # TUNE_GRID plans the same sweep without the long runs; the grid's keys do not move
    assert configs("tune", "smoke", s, {**LONG, **plans.TUNE_GRID}) == [c for c in planned if c != run]
    assert [c for c in planned if not plans.is_tune_long(c, p)] == configs("tune", "smoke", s)


def test_a_longer_round_branches_only_past_the_runs_before_it(tmp_path, runs_env):
    s = Store(tmp_path)
    more = {**LONG, "tune_longer": ((1, 8, 655_360), (1, 16, 327_680))}
    p = plans.profile("smoke", more)
    _finish_grid(s, configs("tune", "smoke", s))
    long = sorted((c for c in configs("tune", "smoke", s, more) if plans.is_tune_long(c, p)),
                  key=lambda c: (c.d_model, c.tokens))
    assert [(c.d_model, c.tokens, c.budgets) for c in long] == [
        (8, 163_840, (81_920,)),  # the first round, at every doubling past the grid's 40,960
        (8, 655_360, (327_680,)),  # the second, past the first round's 163,840 only
        (16, 327_680, (81_920, 163_840)),  # a size without a first round: past the grid
    ]
    assert len({c.key for c in long}) == 3 and {c.warmup_tokens for c in long if c.d_model == 8} == {
        next(c for c in long if c.d_model == 8).warmup_tokens}
    # foreseen before the grids land, and gone once every long config is planned
    assert plans.foreseen("tune", "smoke", s, more) == []
    fresh = [c for c in plans.foreseen("tune", "smoke", Store(tmp_path / "empty"), more) if plans.is_tune_long(c, p)]
    assert sorted(c.tokens for c in fresh) == [163_840, 327_680, 655_360]


@pytest.mark.parametrize("entry, value, words", [
    ("tune_long_sizes", ((3, 64),), "not sizes of tune_ladder"),
    ("tune_long_tokens", 40_960, "must exceed tune_tokens"),
    ("tune_longer", ((3, 64, 1_000_000),), "not a size of tune_ladder"),
    ("tune_longer", ((1, 8, 163_840),), "must exceed the size's runs so far"),
])
def test_a_long_run_must_continue_a_size_of_the_ladder_past_its_budget(entry, value, words):
    with pytest.raises(ValueError, match=words):
        configs("tune", "smoke", Store("/nonexistent-store"), {**LONG, entry: value})


def test_the_long_runs_of_the_stored_tuned_ladder():
    """The book's long runs: planned at their sizes' best rate at 16M on the stored grids; the grids keep every
    stored key; each should take between half an hour and three worker-hours at the rate of the stored grid
    runs of its size (`progress.hours_left`)."""
    from scaling_lib import progress, tuning
    from scaling_lib.sweep import load_sweep

    p = plans.profile("book")
    store = Store()
    planned = configs("tune", "book", store)
    long = [c for c in planned if plans.is_tune_long(c, p)]
    grid = configs("tune", "book", store, plans.TUNE_GRID)
    assert grid == [c for c in planned if not plans.is_tune_long(c, p)]
    stored = store.records("tune")
    long_keys = {r["key"] for r in stored if plans.is_tune_long(RunConfig.from_stored(r["config"]), p)}
    assert {r["key"] for r in stored} - long_keys <= {c.key for c in grid}  # the grid runs' keys are unmoved
    assert long_keys <= {c.key for c in long}
    first = [c for c in long if c.tokens == p["tune_long_tokens"]]
    longer = [c for c in long if c not in first]
    assert sorted((c.n_layer, c.d_model) for c in first) == sorted(p["tune_long_sizes"])
    assert sorted((c.n_layer, c.d_model, c.tokens) for c in longer) == sorted(p["tune_longer"])
    recs, _ = load_sweep("tune", "book", overrides=plans.TUNE_GRID)
    best = tuning.best_rates(runs_table(recs, budgets=True))
    at_16M = best[best["tokens"] == best["tokens"].max()].set_index("N")["lr_grid"]
    for c in long:
        assert c.lr == at_16M[c.N] and c.seed == 0
        # the first round branches at every doubling past the grid; a longer one only past the first round
        assert c.budgets == ((2 * p["tune_tokens"],) if c in first else ())
        grid_run = next(g for g in grid if g.N == c.N and g.lr == c.lr and g.seed == 0)
        assert c.warmup_tokens == grid_run.warmup_tokens and c.eval_version == grid_run.eval_version
    pairs = [(RunConfig.from_stored(r["config"]), r) for r in stored if r["key"] not in long_keys]
    hours = [progress.hours_left(pairs, [c]) for c in long]
    assert all(0.5 < h < 3 for h in hours), hours  # worker-hours each, at the grids' rate (an upper bound)


# --- Porian et al.'s warmup step ------------------------------------------------------------------
def test_the_warmup_sweep_repeats_each_finished_grids_best_run_with_one_fixed_warmup(tmp_path, runs_env):
    s = Store(tmp_path)
    p = plans.profile("smoke")
    assert configs("warmup", "smoke", s) == []  # nothing until a grid is finished, but foreseen at its centre rate
    grid = configs("tune", "smoke", s)
    centres = {(c.d_model, c.lr) for c in grid if c.lr == sorted(x.lr for x in grid if x.N == c.N)[1]}
    assert {(c.d_model, c.lr) for c in plans.foreseen("warmup", "smoke", s)} == centres
    _finish_grid(s, [c for c in grid if c.d_model == 8])
    planned = configs("warmup", "smoke", s)
    assert len(planned) == 1  # the finished size only
    run, = planned
    best = sorted((c for c in grid if c.d_model == 8), key=lambda c: c.lr)[1]
    assert run.sweep == "warmup" and run.warmup_tokens == p["warmup_fixed_tokens"] != best.warmup_tokens
    assert (run.lr, run.seed, run.tokens, run.budgets, run.schedule) == (best.lr, 0, best.tokens, best.budgets, "wsd")
    assert run.key != best.key and plans.warmup_twin(run) == best and plans.warmup_twin(run).key == best.key
    assert [c.d_model for c in plans.foreseen("warmup", "smoke", s)] == [16]
    _finish_grid(s, [c for c in grid if c.d_model == 16])
    assert sorted(c.d_model for c in configs("warmup", "smoke", s)) == [8, 16]
    assert plans.foreseen("warmup", "smoke", s) == []
    with pytest.raises(ValueError, match="not sizes of tune_ladder"):
        configs("warmup", "smoke", s, {"warmup_ladder": ((3, 64),)})


def test_the_book_warmup_is_kaplans_share_of_the_longest_run_for_every_size():
    p = plans.profile("book")
    assert p["warmup_fixed_tokens"] == pytest.approx(3_000 / 250_000 * p["tune_tokens"], rel=0.01)
    assert p["warmup_fixed_tokens"] < min(p["tune_budgets"])  # every branch cools down after the warmup
    assert set(p["warmup_ladder"]) <= set(p["tune_ladder"])
    for L, d in p["warmup_ladder"]:  # longer than the book's own warmup at every size
        grid = plans._tune_base(p, L, d)
        assert grid.warmup_tokens < p["warmup_fixed_tokens"]
