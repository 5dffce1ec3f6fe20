"""Learning-rate schedules (Kaplan App. D.6): the schedule as training applies it, its area, the sweep's table."""
import numpy as np
import pytest

from scaling_lib import plans, schedules
from scaling_lib.config import RunConfig
from scaling_lib.store import Store


def _cfg(**kw):
    return RunConfig(**{"sweep": "schedule", "corpus": "tiny", "n_layer": 1, "d_model": 8, "n_ctx": 16,
                        "batch_size": 4, "tokens": 64 * 200, "lr": 0.01, **kw})


def test_the_area_follows_the_schedule():
    const, cos, cos0 = _cfg(schedule="constant"), _cfg(), _cfg(min_lr_ratio=0.0)
    assert schedules.summed_lr(const) > schedules.summed_lr(cos) > schedules.summed_lr(cos0)
    warm = max(1, const.warmup_tokens // const.tokens_per_step)
    expected = 0.01 * (sum((s + 1) / warm for s in range(warm)) + (const.steps - warm))
    assert schedules.summed_lr(const) == pytest.approx(expected)
    assert len(schedules.lr_curve(cos)) == cos.steps and schedules.lr_curve(cos).max() == pytest.approx(0.01)
    assert schedules.summed_lr(_cfg(lr=0.02)) == pytest.approx(2 * schedules.summed_lr(cos))


def test_labels_name_what_differs_from_the_default():
    assert schedules.label(_cfg()) == "cosine"
    assert schedules.label(_cfg(schedule="wsd", cooldown_frac=0.5)) == "wsd, cooling over 50%"
    assert schedules.label(_cfg(min_lr_ratio=0.0, lr=0.02), peak=0.01) == "cosine, to 0 of the peak, 2x the rate"
    assert "warmup" in schedules.label(_cfg(warmup_tokens=4096))


def test_the_sweep_plans_its_variants_and_refuses_unknown_fields(tmp_path):
    cfgs = plans.configs("schedule", "smoke", Store(tmp_path))
    assert [c.schedule for c in cfgs] == ["cosine", "constant", "wsd"]
    assert cfgs[2].lr == pytest.approx(cfgs[0].lr / 2, rel=1e-4)
    with pytest.raises(ValueError, match="not a schedule field"):
        plans.configs("schedule", "smoke", Store(tmp_path), {"schedule_variants": (dict(schedule="cosine", foo=1),)})
    with pytest.raises(ValueError, match="repeats"):
        plans.configs("schedule", "smoke", Store(tmp_path), {"schedule_variants": (dict(schedule="cosine"),) * 2})


def test_the_best_schedule_is_told_apart_only_beyond_twice_the_noise_of_a_difference():
    import pandas as pd

    runs = pd.DataFrame(dict(label=["wsd", "cosine", "constant"], schedule=["wsd", "cosine", "constant"],
                             final_val_loss=[4.900, 4.9036, 4.80]))
    close, apart = schedules.best_told_apart(runs, 0.009)  # the constant rate is left out even though it is lowest
    assert close.startswith("The runner-up, cosine, ends 0.07% above the best, less than twice")
    assert close.endswith("(2.55%): the best schedule is not told apart from it.") and apart is False
    far, apart = schedules.best_told_apart(runs.assign(final_val_loss=[4.9, 5.2, 4.8]), 0.009)
    assert "more than twice" in far and far.endswith("the best schedule is told apart from it.") and apart is True
    unknown, apart = schedules.best_told_apart(runs, None)
    assert "not known" in unknown and apart is None
    assert schedules.best_told_apart(runs.iloc[[0, 2]], 0.009) == ("", None)  # one decaying schedule: nothing to tell apart


def test_fig_22_draws_a_curve_and_a_point_per_run():
    from scaling_lib import plots
    import pandas as pd

    cfgs = {"a": _cfg(), "b": _cfg(schedule="constant")}
    runs = pd.DataFrame([dict(key=k, label=schedules.label(c), summed_lr=schedules.summed_lr(c), final_val_loss=5.0 + i)
                         for i, (k, c) in enumerate(cfgs.items())])
    fig = plots.schedules(runs, cfgs)
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].collections) == 2
