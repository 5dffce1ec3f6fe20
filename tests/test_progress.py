"""Sweep progress: stored against planned, and the hours left sized from the sweep's own runs."""
from __future__ import annotations

import math

import pytest

from scaling_lib import plans, progress
from scaling_lib.plans import configs, cost
from scaling_lib.store import Store
from test_store import fake_record

pytestmark = pytest.mark.usefixtures("runs_env")

CHAPTERS = {"02_learning_curves": (("ladder", None), ("ladder", {"long_max_N": 0})),
            "04_model_size": (("ladder", None),), "03_tuning_lr": (("lr", None),)}


def test_sweeps_of_lists_each_sweep_once_with_its_chapters_in_order():
    assert progress.sweeps_of(CHAPTERS) == {"ladder": ["02_learning_curves", "04_model_size"],
                                            "lr": ["03_tuning_lr"]}


def _store_some(store: Store, name: str, k: int, seconds_per_cost: float, status: str = "ok"):
    cfgs = list(dict.fromkeys(configs(name, "smoke", store)))
    for c in cfgs[:k]:
        rec = fake_record(c, status=status)
        rec["provenance"].update(wall_time_s=seconds_per_cost * cost([c]), threads=1)
        store.save(rec)
    return cfgs


def test_progress_counts_stored_and_left_and_sizes_the_rest_from_the_stored_rate(tmp_path):
    store = Store(tmp_path)
    ladder = _store_some(store, "ladder", 2, seconds_per_cost=3e-5)
    table = progress.sweep_progress(CHAPTERS, "smoke", store).set_index("sweep")
    row = table.loc["ladder"]
    assert (row.stored, row.not_finished, row.planned_left) == (2, 0, len(ladder) - 2)
    assert row.chapters == "02_learning_curves, 04_model_size"
    assert row.cpu_hours == pytest.approx(3e-5 * cost(ladder[:2]) / 3600)
    assert row.hours_left == pytest.approx(3e-5 * cost(ladder[2:]) / 3600)
    assert row.foreseen == 0  # the ladder plans every run at once
    lr = table.loc["lr"]  # nothing stored: nothing to size the rest by
    assert lr.stored == 0 and lr.planned_left == len(set(configs("lr", "smoke", store)))
    assert math.isnan(lr.hours_left)


def test_the_hours_left_take_each_run_at_the_rate_of_the_nearest_stored_size():
    cfgs = list(dict.fromkeys(configs("ladder", "smoke", Store("/nonexistent"))))
    small, large = min(cfgs, key=lambda c: c.N), max(cfgs, key=lambda c: c.N)
    assert small.N < large.N

    def timed(c, rate):
        rec = fake_record(c)
        rec["provenance"].update(wall_time_s=rate * cost([c]), threads=1)
        return c, rec

    pairs = [timed(small, 9e-5), timed(large, 1e-5), timed(large, 3e-5)]
    missing = [small.replace(seed=7), large.replace(seed=7), large.replace(seed=8)]
    want = (9e-5 * cost(missing[:1]) + 2e-5 * cost(missing[1:])) / 3600  # the large size's median: 2e-5
    assert progress.hours_left(pairs, missing) == pytest.approx(want)
    assert progress.hours_left(pairs, []) == 0.0
    assert math.isnan(progress.hours_left([], missing))


def test_a_diverged_run_is_stored_but_not_finished(tmp_path):
    store = Store(tmp_path)
    _store_some(store, "lr", 1, 1e-5, status="diverged")
    row = progress.sweep_progress(CHAPTERS, "smoke", store).set_index("sweep").loc["lr"]
    assert (row.stored, row.not_finished) == (0, 1)


def test_gpu_runs_do_not_size_the_cpu_work():
    cfg = configs("ladder", "smoke", Store("/nonexistent"))[0]
    gpu = fake_record(cfg)
    gpu["provenance"].update(device="cuda:0", wall_time_s=1.0)
    assert math.isnan(progress.hours_left([(cfg, gpu)], [cfg.replace(seed=7)]))


@pytest.mark.parametrize("status", ["diverged", "early_stopped"])
def test_a_run_that_stopped_short_of_its_budget_does_not_make_the_rest_look_cheap(status):
    cfg = configs("ladder", "smoke", Store("/nonexistent"))[0]
    done = fake_record(cfg)
    done["provenance"].update(wall_time_s=4e-5 * cost([cfg]), threads=1)
    short = fake_record(cfg.replace(seed=1), status=status)  # stopped a tenth of the way in
    short.update(tokens=cfg.tokens // 10, steps=cfg.steps // 10,
                 diverged_at_step=cfg.steps // 10 if status == "diverged" else None)
    short["provenance"].update(wall_time_s=4e-5 * cost([cfg]) / 10, threads=1)
    missing = [cfg.replace(seed=7)]
    want = 4e-5 * cost(missing) / 3600
    pairs = [(cfg, done), (cfg.replace(seed=1), short)]
    assert progress.hours_left(pairs, missing) == pytest.approx(want)
    assert math.isnan(progress.hours_left(pairs[1:], missing))  # nothing that trained its budget to size by


def test_a_sweep_waiting_for_the_rule_says_so(tmp_path, monkeypatch):
    def waits(*a, **k):
        raise plans.MissingRule("no runs/rules/lr.json")
    monkeypatch.setattr(progress, "configs", waits)
    row = progress.sweep_progress({"14_overfitting": (("overfit", None),)}, "smoke", Store(tmp_path)).iloc[0]
    assert row.planned_left == 0 and "learning-rate rule" in row.note


def test_a_lent_gpus_runs_are_counted_beside_the_cpus(tmp_path):
    store = Store(tmp_path)
    gpu = list(dict.fromkeys(configs("ladder", "gpu", store)))
    store.save(fake_record(gpu[0]))
    chapters = {"04_model_size": (("ladder", None),)}
    row = progress.sweep_progress(chapters, "cpu", store).iloc[0]
    assert (row.stored, row.gpu_stored) == (0, 1)
    assert progress.sweep_progress(chapters, "smoke", store).iloc[0].gpu_stored == 0  # smoke never reads them


def test_the_runs_a_sweep_will_plan_are_counted_and_sized_with_the_rest(tmp_path):
    store = Store(tmp_path)
    tune = _store_some(store, "tune", 1, seconds_per_cost=3e-5)
    row = progress.sweep_progress({"04_model_size": (("tune", None),)}, "smoke", store).iloc[0]
    later = plans.foreseen("tune", "smoke", store)
    assert row.foreseen == len(later) > 0 and row.planned_left == len(tune) - 1
    assert row.hours_left == pytest.approx(3e-5 * cost(tune[1:] + later) / 3600)


def test_a_sweep_that_repeats_anothers_recipe_is_sized_by_its_runs_until_it_has_its_own(tmp_path, monkeypatch):
    store = Store(tmp_path)
    _store_some(store, "tune", 2, seconds_per_cost=3e-5)
    chapters = {"10_kaplan_chinchilla": (("tune", None), ("warmup", None))}
    row = progress.sweep_progress(chapters, "smoke", store).set_index("sweep").loc["warmup"]
    later = plans.foreseen("warmup", "smoke", store)
    assert row.stored == 0 and row.foreseen == len(later) > 0
    assert row.hours_left == pytest.approx(3e-5 * cost(later) / 3600) and "tune" in row.note
    monkeypatch.setattr(progress, "SIZED_BY", {})  # without the stand-in, nothing sizes it
    assert math.isnan(progress.sweep_progress(chapters, "smoke", store).set_index("sweep").loc["warmup"].hours_left)
