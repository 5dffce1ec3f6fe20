"""Depth at a fixed size: stored latency, the loss by depth over seeds, the shallowest depth within 1%."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scaling_lib import depth
from scaling_lib.store import Store


def _timing(median: float) -> dict:
    return dict(median=median, q25=0.9 * median, q75=1.1 * median, min=0.8 * median, max=1.2 * median, n=5)


def _result(fixed_N=300_000.0, per_layer=0.001, base=0.01) -> dict:
    """A `bench.depth_latency`-shaped result whose batch-1 latency is exactly linear in depth."""
    shapes = []
    for L, d in ((1, 160), (2, 112), (4, 80)):
        shapes.append(dict(n_layer=L, d_model=d, n_head=d // 8, N=12 * L * d * d, N_total=12 * L * d * d + 4224 * d,
                           train_s_per_step=_timing(0.3 + 0.01 * L),
                           generate=[dict(batch=1, tokens=32, prompt=16, s_per_token=_timing(base + per_layer * L))]))
    fit = dict(slope=per_layer, intercept=base, r2=1.0, ratio=(base + 4 * per_layer) / (base + per_layer),
               residuals=[0.0, 0.0, 0.0])
    return dict(device="cpu:x86_64", threads=1, fixed_N=fixed_N, head_size=8, shapes=shapes,
                fits={"generate_batch_1_s_per_token": fit})


def test_a_latency_result_is_filed_atomically_by_device_size_head_and_threads(tmp_path):
    p = depth.save_latency(_result(), tmp_path)
    assert p == tmp_path / "latency" / "cpu-x86_64-N300000-h8-t1.json"
    assert not [q for q in p.parent.iterdir() if q.name.startswith(".")]  # no temporary file left
    back = depth.load_latency(tmp_path)
    assert len(back) == 1 and back[0]["fixed_N"] == 300_000.0 and back[0]["filed"]
    # filed beside the runs, but not a run
    assert Store(tmp_path).records() == []


def test_a_file_that_is_not_a_latency_result_is_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match="not a depth latency result"):
        depth.latency_name({"device": "cpu"})
    (tmp_path / "latency").mkdir()
    (tmp_path / "latency" / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="x.json is not readable JSON"):
        depth.load_latency(tmp_path)


def test_latency_and_fit_tables_flatten_a_result():
    t = depth.latency_table([_result()])
    assert set(t["measure"]) == {"training step", "generation, batch 1"}
    b1 = t[t["measure"] == "generation, batch 1"].set_index("n_layer")["median_s"]
    assert b1.loc[4] == pytest.approx(0.014)
    f = depth.fit_table([_result()])
    assert f.loc[0, "measure"] == "generation, batch 1"
    assert f.loc[0, "slope_s"] == 0.001 and f.loc[0, "max_rel_residual"] == 0.0


def test_the_output_layer_dominates_shallow_wide_shapes_and_shrinks_with_depth():
    shares = [depth.output_share(L, d) for L, d in ((1, 160), (4, 80), (16, 40))]
    assert shares[0] > 0.5 and shares[0] > shares[1] > shares[2]


def test_output_shares_reads_each_row_of_a_runs_table_by_N():
    t = pd.DataFrame(dict(N=[30_000, 300_000], n_layer=[1, 16], d_model=[160, 40], n_ctx=[128, 128]))
    got = depth.output_shares(t)
    assert got.index.tolist() == [30_000, 300_000]
    assert got.tolist() == [depth.output_share(1, 160), depth.output_share(16, 40)]


def test_each_run_is_grouped_with_the_target_size_it_was_shaped_to():
    got = depth.nearest_size([49_152, 55_296, 301_056, 307_200], [300_000, 50_000])
    assert got.tolist() == [50_000, 50_000, 300_000, 300_000]
    with pytest.raises(ValueError):
        depth.nearest_size([1.0], [])


def _runs(means: dict[int, float], seeds: int = 3, noise: float = 0.0, size: int = 300_000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [dict(N=size, n_layer=L, d_model=64, seed=s, final_val_loss=m + noise * rng.standard_normal())
            for L, m in means.items() for s in range(seeds)]
    return pd.DataFrame(rows)


def test_by_depth_summarises_the_seeds_of_each_depth():
    t = depth.by_depth(_runs({1: 5.0, 2: 4.9}, seeds=4, noise=0.01), [300_000])
    assert t["seeds"].tolist() == [4, 4]
    assert t["se"].iloc[0] == pytest.approx(t["sd"].iloc[0] / 2)
    assert t["ppl_mean"].iloc[1] == pytest.approx(np.exp(4.9), rel=0.02)


def test_the_shallowest_depth_within_the_tolerance_is_chosen_not_the_best():
    runs = _runs({1: 5.10, 2: 5.04, 4: 5.00, 8: 5.01})
    c = depth.first_within(runs, [300_000], tol=0.01, bootstrap=200).iloc[0]
    assert c["best_n_layer"] == 4 and c["first_n_layer"] == 2
    assert c["excess"] == pytest.approx(5.04 / 5.00 - 1)
    assert c["share"] == 1.0 and c["depths_95"] == [2]  # identical seeds: nothing to resample
    strict = depth.first_within(runs, [300_000], tol=0.0, bootstrap=0).iloc[0]
    assert strict["first_n_layer"] == 4


def test_seed_noise_near_the_threshold_shows_in_the_bootstrap():
    runs = _runs({1: 5.052, 2: 5.049, 4: 5.00}, seeds=5, noise=0.03)
    c = depth.first_within(runs, [300_000], tol=0.01, bootstrap=500, seed=3).iloc[0]
    assert c["share"] < 0.95 and len(c["depths_95"]) >= 2
    with pytest.raises(ValueError, match="tolerance"):
        depth.first_within(runs, [300_000], tol=1.5)


def test_savings_compare_the_chosen_depth_with_the_best_and_the_deepest():
    choice = depth.first_within(_runs({1: 5.10, 2: 5.04, 4: 5.00}), [300_000], bootstrap=0)
    s = depth.savings(choice, depth.latency_table([_result()]), "generation, batch 1").iloc[0]
    assert s["first_n_layer"] == 2 and s["best_n_layer"] == 4 and s["deepest_n_layer"] == 4
    assert s["first_over_best"] == pytest.approx(0.012 / 0.014)


def _cli(*args: str, **kw):
    return subprocess.run([sys.executable, "-m", "scaling_lib", *args], capture_output=True, text=True, **kw)


def test_bench_save_without_depths_is_one_clear_line():
    r = _cli("bench", "--save")
    assert r.returncode == 2 and "--save" in r.stderr and "Traceback" not in r.stderr


def test_bench_save_files_what_it_prints(tmp_path):
    r = _cli("bench", "--depths", "1,2", "--fixed-n", "3000", "--head-size", "4", "--threads", "1", "--steps", "1",
             "--gen-tokens", "2", "--gen-batches", "1", "--batch-size", "2", "--n-ctx", "16", "--vocab", "512",
             "--save", "--store", str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr
    filed = depth.load_latency(tmp_path)
    assert len(filed) == 1 and "filed" in r.stderr
    printed = json.loads(r.stdout)
    assert filed[0]["shapes"] == printed["shapes"] and "generate_batch_1_s_per_token" in filed[0]["fits"]


def test_the_depth_figures_draw_one_series_per_size():
    from scaling_lib import plots

    results = [_result(300_000.0), _result(50_000.0, per_layer=0.0005)]
    fig = plots.depth_latency(depth.latency_table(results), depth.fit_table(results),
                              measures=["generation, batch 1"])
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and len(ax.get_lines()) >= 2  # points with error bars, and the fits
    runs = pd.concat([_runs({1: 5.1, 2: 5.0}, size=300_000), _runs({1: 5.3, 2: 5.2}, size=50_000)])
    fig = plots.loss_by_depth(depth.by_depth(runs, [50_000, 300_000]))
    assert len(fig.axes[0].containers) == 2 and fig.axes[0].get_ylabel() == "validation perplexity"


def test_a_profile_that_trains_what_it_lacks_times_its_depth_sizes_once(tmp_path):
    first = depth.ensure_latency("smoke", tmp_path, repeats=1)
    assert [r["fixed_N"] for r in first] == [3000.0]
    assert [s["n_layer"] for s in first[0]["shapes"]] == [1, 2, 3]
    mtime = (tmp_path / "latency").stat().st_mtime_ns, [p.stat().st_mtime_ns for p in (tmp_path / "latency").iterdir()]
    again = depth.ensure_latency("smoke", tmp_path, repeats=1)
    assert len(again) == 1
    assert [p.stat().st_mtime_ns for p in (tmp_path / "latency").iterdir()] == mtime[1]  # not measured twice
    assert depth.ensure_latency("book", tmp_path / "empty") == []  # the book profile only reads


def test_the_trend_with_depth_says_rises_only_where_the_loss_rises():
    depths = [1, 2, 4, 8, 16]
    up = depth.loss_trend(depths, [4.0, 4.1, 4.2, 4.3, 4.4])
    assert up["direction"] == "rises" and up["rho"] == pytest.approx(1.0) and up["depths"] == 5
    assert up["text"].startswith("the loss rises at every step in depth") and "ρ = +1.00" in up["text"]
    down = depth.loss_trend(depths, [4.4, 4.3, 4.2, 4.1, 4.0])
    assert down["direction"] == "falls" and "falls at every step" in down["text"] and "rises" not in down["text"]
    # lowest at 2 layers, up at every step beyond (the shape chapter's stored scan)
    dip = depth.loss_trend([1, 2, 4, 6, 8, 12, 16], [1.023, 0.983, 1.013, 1.033, 1.046, 1.063, 1.081])
    assert dip["best_n_layer"] == 2 and dip["direction"] == "rises"
    assert "lowest at 2 layers and rises at every step in depth beyond it" in dip["text"]
    # mixed steps: a tendency only where the rank correlation is significant
    mixed = depth.loss_trend(range(1, 11), [1.0, 1.2, 1.1, 1.3, 1.25, 1.4, 1.35, 1.5, 1.45, 1.6])
    assert mixed["p"] < 0.05 and "tends to rise" in mixed["text"] and "not at every step" in mixed["text"]
    flat = depth.loss_trend(depths, [4.2, 4.0, 4.3, 3.9, 4.2])
    assert flat["direction"] is None and "no steady trend" in flat["text"]


def test_the_trend_with_depth_averages_seeds_and_needs_three_depths():
    seeds = depth.loss_trend([1, 1, 2, 2, 4, 4], [4.0, 4.2, 4.3, 4.3, 4.5, 4.5])
    assert seeds["depths"] == 3 and seeds["direction"] == "rises"  # 4.1 < 4.3 < 4.5
    few = depth.loss_trend([1, 2, 2], [4.0, 4.1, np.nan])
    assert few["depths"] == 2 and few["direction"] is None and np.isnan(few["rho"])
    assert "too few" in few["text"]
