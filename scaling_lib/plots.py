"""Figures: each takes a table (and a fit), draws on a fresh Figure or a given axis, and returns the Figure.

No pyplot state is touched (figures are made with matplotlib.figure.Figure, so nothing is shown
twice and nothing leaks between cells); one seaborn style for the whole book.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

STYLE = "whitegrid"
# Axis labels with units, for the columns of the run tables that figures put on an axis.
AXIS_LABELS = {
    "N": "non-embedding parameters N",
    "N_total": "all parameters, embeddings included",
    "tokens": "tokens processed D",
    "D": "training tokens available D",
    "steps": "steps S",
    "C": "compute C = 6ND (FLOPs)",
    "C_exact": "compute, exact count (FLOPs)",
}
CMAP = "viridis"


@contextmanager
def _style():
    with sns.axes_style(STYLE), mpl.rc_context({"figure.dpi": 110, "axes.titlesize": "medium"}):
        yield


def _axes(ax, ncols: int = 1, size=(6.0, 4.2)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def _log_norm(values) -> mpl.colors.LogNorm:
    v = np.asarray(values, float)
    return mpl.colors.LogNorm(vmin=v.min(), vmax=max(v.max(), v.min() * 1.01))


def _coloured_groups(df: pd.DataFrame, by: str, sort: str | None = None):
    """(value, rows, colour) for each value of `by`, coloured on a log scale of it (viridis), the rows
    sorted by `sort`; and the (norm, cmap) for a colour bar."""
    norm, cmap = _log_norm(df[by]), mpl.colormaps[CMAP]
    groups = [(v, g.sort_values(sort) if sort else g, cmap(norm(v))) for v, g in df.groupby(by)]
    return groups, (norm, cmap)


def _filled_or_hollow(fig, ax, levels, *, colorbar: str, filled: str, hollow: str, **marker):
    """The set-up of a figure whose marks are coloured by a level (log scale) and drawn filled or
    hollow: the key of the two kinds of mark (`marker` their scatter style) and the colour bar
    labelled `colorbar`. Returns the colour of a level."""
    norm = _log_norm(levels)
    cmap = mpl.colormaps[CMAP]
    ax.scatter([], [], color="grey", label=filled, **marker)
    ax.scatter([], [], facecolors="none", edgecolors="grey", label=hollow, **marker)
    ax.legend(fontsize="small")
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=colorbar)
    return lambda level: cmap(norm(level))


def learning_curves(curves: pd.DataFrame, *, x: str = "tokens", ax=None, label: str = "N",
                    envelope: pd.DataFrame | None = None, fit=None,
                    label_name: str = "non-embedding parameters N") -> Figure:
    """Validation loss against tokens or compute, one line per run, coloured by `label` (Kaplan Fig. 2)."""
    with _style():
        fig, ax = _axes(ax)
        norm = _log_norm(curves[label])
        cmap = mpl.colormaps[CMAP]
        for _, run in curves[curves[x] > 0].groupby("key"):
            ax.plot(run[x], run["val_loss"], color=cmap(norm(run[label].iloc[0])), lw=1.2, alpha=0.9)
        if envelope is not None:
            ax.plot(envelope[x], envelope["val_loss"], "k--", lw=1, label="lower envelope")
        if fit is not None:
            xs = np.geomspace(curves.loc[curves[x] > 0, x].min(), curves[x].max(), 100)
            ax.plot(xs, fit.predict(xs), color="crimson", lw=1.5, label="power-law fit to the envelope")
        xlabel = {"tokens": "tokens processed", "C": "compute C = 6ND (FLOPs)", "C_pf": "compute (PF-days)",
                  "C_min": "compute at the critical batch C_min (FLOPs)"}.get(x, x)
        ax.set(xscale="log", xlabel=xlabel, ylabel="validation loss (nats/token)")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label_name)
        if envelope is not None or fit is not None:
            ax.legend(loc="upper right", fontsize="small")
    return fig


def power_law_fit(df: pd.DataFrame, x: str, y: str, fit, *, ax=None, hue: str | None = None,
                  reference=None, reference_label: str = "Kaplan et al. (2020)", xlabel: str | None = None,
                  held_out=None, held_out_fit=None) -> Figure:
    """Points and the fitted law, and optionally the paper's law for comparison.

    `held_out` (a mask of df's rows) circles the points an extrapolation check held out, and
    `held_out_fit` draws the law fitted without them, dashed, so its prediction can be read off.
    """
    with _style():
        fig, ax = _axes(ax)
        if hue:
            sns.scatterplot(data=df, x=x, y=y, hue=hue, ax=ax, palette=CMAP, zorder=3)
        else:
            ax.scatter(df[x], df[y], color="C0", zorder=3, label="runs")
        if held_out is not None and held_out.any():
            ax.scatter(df.loc[held_out, x], df.loc[held_out, y], s=90, facecolors="none", edgecolors="crimson",
                       zorder=4, label="held out of the fit")
        xs = np.geomspace(df[x].min() / 1.5, df[x].max() * 1.5, 200)
        ax.plot(xs, fit.predict(xs), color="crimson", lw=1.5, label="fit")
        if held_out_fit is not None:
            ax.plot(xs, held_out_fit.predict(xs), color="crimson", ls="--", lw=1,
                    label="fit without the held-out points")
        if reference is not None:
            ax.plot(xs, reference(xs), color="grey", ls=":", lw=1.5, label=reference_label)
        ax.set(xscale="log", yscale="log", xlabel=xlabel or AXIS_LABELS.get(x, x), ylabel="validation loss (nats/token)")
        ax.yaxis.set_minor_formatter(mpl.ticker.FormatStrFormatter("%.1f"))
        ax.legend(fontsize="small")
    return fig


def lr_sweep(df: pd.DataFrame, best: pd.DataFrame | None = None, *, ax=None, rule=None) -> Figure:
    """Final loss against peak learning rate, one line per model size; the fitted optimum of each marked."""
    with _style():
        fig, axes = _axes(ax, ncols=1 if ax is not None or best is None else 2)
        ax0 = axes if not isinstance(axes, np.ndarray) else axes[0]
        norm = _log_norm(df["N"])
        cmap = mpl.colormaps[CMAP]
        for N, g in df.sort_values("lr").groupby("N"):
            ax0.plot(g["lr"], g["final_val_loss"], "o-", color=cmap(norm(N)), ms=4, lw=1.2)
        if best is not None:
            ax0.scatter(best["lr_best"], best["loss_at_best"], marker="*", s=120, color="crimson", zorder=4,
                        label="interpolated optimum")
            ax0.legend(fontsize="small")
        ax0.set(xscale="log", xlabel="peak learning rate", ylabel="validation loss (nats/token)")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax0, label=AXIS_LABELS["N"])
        if isinstance(axes, np.ndarray) and best is not None:
            ax1 = axes[1]
            ax1.scatter(best["N"], best["lr_best"], color="crimson", zorder=3, label="best LR (this book)")
            Ns = np.geomspace(best["N"].min() / 2, best["N"].max() * 2, 100)
            for r in rule or []:
                ax1.plot(Ns, r["fn"](Ns), ls=r.get("ls", "-"), color=r.get("color"), label=r["label"])
            ax1.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", ylabel="peak learning rate")
            ax1.legend(fontsize="small")
    return fig


def reference_lines(ax, ref: dict | None, orders=("unigram", "bigram", "trigram")) -> list[str]:
    """Dotted horizontal lines at the n-gram cross-entropies of the corpus (`ngram.stored_reference`),
    each labelled at the right; those outside the axis' loss range are left out. Nothing without `ref`.
    Returns the orders drawn (a caption can say so only where there are some)."""
    if not ref:
        return []
    lo, hi = ax.get_ylim()
    drawn = []
    for name in orders:
        v = ref.get(name)
        if v is not None and lo <= v <= hi:
            ax.axhline(v, color="grey", ls=":", lw=1, zorder=1)
            ax.annotate(name, (1.0, v), xycoords=("axes fraction", "data"), xytext=(-3, 2),
                        textcoords="offset points", ha="right", va="bottom", fontsize="x-small", color="grey")
            drawn.append(name)
    return drawn


def reference_phrase(*drawn: list[str], sep: str = "; ",
                     quantity: tuple[str, str] = ("cross-entropy", "cross-entropies")) -> str:
    """A caption's words for the n-gram lines `reference_lines` drew (one list a panel): `sep` then "dotted, the
    corpus's bigram and trigram cross-entropies", naming only the orders drawn on some panel; "" where none was.
    `quantity`: what the lines are, singular and plural (a perplexity axis draws perplexities)."""
    names = [name for name in ("unigram", "bigram", "trigram") if any(name in d for d in drawn)]
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{sep}dotted, the corpus's {listed} {quantity[0] if len(names) == 1 else quantity[1]}"


def best_rates(best: pd.DataFrame, *, rule=None, ax=None) -> Figure:
    """Each (N, budget)'s best peak rate of a tuned grid against N, one colour per budget: filled
    where the best lies inside the grid (the parabola's minimum), hollow at an edge (the grid's
    best, a bound); with the fitted rule LR*(N, D) at each budget."""
    with _style():
        fig, ax = _axes(ax)
        colour = _filled_or_hollow(fig, ax, best["tokens"], colorbar="token budget D", filled="best inside the grid",
                                   hollow="best at the grid's edge", s=28)
        for D, g in best.groupby("tokens"):
            c = colour(D)
            inside = g[g["inside"]]
            edge = g[~g["inside"]]
            ax.scatter(inside["N"], inside["lr_star"], color=c, s=28, zorder=3)
            ax.scatter(edge["N"], edge["lr_grid"], facecolors="none", edgecolors=[c], s=28, zorder=3)
            if rule is not None:
                Ns = np.geomspace(best["N"].min() / 1.5, best["N"].max() * 1.5, 50)
                ax.plot(Ns, rule(Ns, D), color=c, lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS["N"], ylabel="best peak learning rate")
    return fig


def stacked_shares(table: pd.DataFrame, *, ax=None) -> Figure:
    """Share of the forward FLOPs per token in each row of Kaplan's Table 1, one bar per shape."""
    with _style():
        fig, ax = _axes(ax, size=(7.5, 4.2))
        shares = table.div(table.sum(axis=1), axis=0)
        bottom = np.zeros(len(shares))
        colors = sns.color_palette("tab10", len(shares.columns))
        for col, c in zip(shares.columns, colors):
            ax.bar(range(len(shares)), shares[col], bottom=bottom, label=col, color=c)
            bottom += shares[col].to_numpy()
        ax.set_xticks(range(len(shares)), shares.index, rotation=30, ha="right")
        ax.set(ylabel="share of forward FLOPs per token", ylim=(0, 1))
        ax.legend(fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


def loss_vs_budget(df: pd.DataFrame, *, ax=None, x: str = "tokens", fits: dict | None = None) -> Figure:
    """Final loss against token budget, one line per run (its several budgets), coloured by model size."""
    with _style():
        fig, ax = _axes(ax)
        norm = _log_norm(df["N"])
        cmap = mpl.colormaps[CMAP]
        for _, g in df.sort_values(x).groupby("key" if "key" in df else "N"):
            ax.plot(g[x], g["final_val_loss"], "o-", color=cmap(norm(g["N"].iloc[0])), ms=4)
        ax.set(xscale="log", yscale="log", xlabel=AXIS_LABELS.get(x, x), ylabel="validation loss (nats/token)")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=AXIS_LABELS["N"])
    return fig


def estimates(df: pd.DataFrame, x: str, y: str, *, lo: str = "lo", hi: str = "hi", hue: str | None = None,
              bands: dict | None = None, ax=None, xlabel: str | None = None, ylabel: str | None = None) -> Figure:
    """Fitted values with their intervals against a variable (an exponent against the budget, say).

    One line of points with error bars for each `hue` value; `bands` adds {label: (value, lo, hi)}
    as a horizontal line with a shaded interval (a limit that the points should approach).
    """
    with _style():
        fig, ax = _axes(ax)
        groups = df.groupby(hue, sort=False) if hue else [(None, df)]
        for i, (label, g) in enumerate(groups):
            g = g.sort_values(x)
            ax.errorbar(g[x], g[y], yerr=[g[y] - g[lo], g[hi] - g[y]], fmt="o-", color=f"C{i}", capsize=3,
                        ms=5, lw=1.2, label=label)
        for j, (label, (value, low, high)) in enumerate((bands or {}).items()):
            color = f"C{j + (df[hue].nunique() if hue else 1)}"
            ax.axhline(value, color=color, ls="--", lw=1, label=label)
            ax.axhspan(low, high, color=color, alpha=0.12)
        ax.set(xscale="log", xlabel=xlabel or x, ylabel=ylabel or y)
        if hue or bands:
            ax.legend(fontsize="small")
    return fig


def power_laws(groups: dict, x: str, y: str, *, ax=None, xlabel: str | None = None) -> Figure:
    """Several families on one log-log axis: {label: (table, fit)}, each its points and its fitted law."""
    with _style():
        fig, ax = _axes(ax)
        for i, (label, (df, fit)) in enumerate(groups.items()):
            ax.scatter(df[x], df[y], color=f"C{i}", zorder=3, label=label)
            if fit is not None:
                xs = np.geomspace(df[x].min() / 1.5, df[x].max() * 1.5, 200)
                ax.plot(xs, fit.predict(xs), color=f"C{i}", lw=1.2, alpha=0.8)
        ax.set(xscale="log", yscale="log", xlabel=xlabel or x, ylabel="validation loss (nats/token)")
        ax.yaxis.set_minor_formatter(mpl.ticker.FormatStrFormatter("%.1f"))
        ax.legend(fontsize="small")
    return fig


def per_position(df: pd.DataFrame, *, ax=None, style: str | None = "family") -> Figure:
    """Loss against position T in the context, one line per run, coloured by N (Fig. 7 right, Fig. 20).

    `df` has columns T, loss, N and key; with `style` (a column), its first value is drawn solid
    and the others dashed, with a legend.
    """
    with _style():
        fig, ax = _axes(ax)
        norm = _log_norm(df["N"])
        cmap = mpl.colormaps[CMAP]
        kinds = list(dict.fromkeys(df[style])) if style else [None]
        dashes = {k: ("-" if i == 0 else "--" if i == 1 else ":") for i, k in enumerate(kinds)}
        for _, run in df.groupby("key", sort=False):
            kind = run[style].iloc[0] if style else None
            ax.plot(run["T"], run["loss"], ls=dashes[kind], color=cmap(norm(run["N"].iloc[0])), lw=1.1)
        ax.set(xscale="log", xlabel="position T in the context (tokens seen)", ylabel="loss at T (nats/token)")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="non-embedding parameters N")
        if style:
            for kind in kinds:
                ax.plot([], [], ls=dashes[kind], color="grey", label=kind)
            ax.legend(fontsize="small")
    return fig


def against_paper(rows: pd.DataFrame, *, ax=None) -> Figure:
    """Each measured value over the paper's, with its 95% interval, against the line of agreement (1).

    `rows` has columns label, value, lo, hi, paper_value (lo/hi NaN where there is no interval; one of them NaN
    where the interval has one end only, as when an exponent's reaches the fitter's cap: it is drawn from that end
    through the value to an arrow on the open side); rows without a paper value are left out. An empty table draws
    an empty, labelled axis.
    """
    with _style():
        fig, ax = _axes(ax, size=(7.5, max(2.5, 0.38 * len(rows) + 1.2)))
        ok = rows[rows["paper_value"].notna()] if len(rows) else rows
        ratio = (ok["value"] / ok["paper_value"]).to_numpy(float) if len(ok) else np.array([])
        y = np.arange(len(ok))[::-1]
        if len(ok):
            lo = (ok["lo"] / ok["paper_value"]).to_numpy(float)
            hi = (ok["hi"] / ok["paper_value"]).to_numpy(float)
            has = np.isfinite(lo) & np.isfinite(hi)
            one = np.isfinite(lo) ^ np.isfinite(hi)
            ax.errorbar(ratio[has], y[has], xerr=np.vstack([ratio[has] - lo[has], hi[has] - ratio[has]]), fmt="o",
                        color="C0", capsize=3, label="book, 95% interval")
            if one.any():
                _one_sided(ax, ratio[one], y[one], np.where(np.isfinite(lo), lo, hi)[one],
                           open_up=(np.isfinite(lo) == (ok["paper_value"].to_numpy(float) > 0))[one])
            none = ~has & ~one
            ax.scatter(ratio[none], y[none], marker="x", color="C1", zorder=3, label="book, no interval")
            ax.set_yticks(y, ok["label"])
            ax.legend(fontsize="small", loc="lower right")
        else:
            ax.set_yticks([])
            ax.text(0.5, 0.5, "no results recorded yet", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(1.0, color="grey", ls="--", lw=1)
        ax.set(xlabel="book's value / paper's value (1 = the paper's)")
    return fig


def _one_sided(ax, x, y, end, open_up) -> None:
    """Intervals with one end: a bar from `end` through the value `x`, ending in an arrow on the open side
    (towards larger x where `open_up`), as long again as end-to-value or a tenth of the drawn range."""
    span = np.ptp(np.concatenate([x, end])) if len(x) > 1 else 0.0
    ax.scatter(x, y, marker="o", color="C2", zorder=3, label="book, one end only (arrow: open side)")
    for xi, yi, e, up in zip(x, y, end, open_up):
        reach = max(abs(xi - e), 0.1 * span, 0.05 * max(abs(xi), 1e-12))
        tip = (max(xi, e) + reach) if up else (min(xi, e) - reach)
        ax.plot([e, e], [yi - 0.15, yi + 0.15], color="C2", lw=1)
        ax.annotate("", xy=(tip, yi), xytext=(e, yi), arrowprops=dict(arrowstyle="->", color="C2", lw=1.2))


def isoflop_profiles(slices: pd.DataFrame, optima: pd.DataFrame | None = None, *, ax=None) -> Figure:
    """IsoFLOP profiles (cf. Hoffmann et al. 2022, Fig. 3): at each compute level C the loss against N,
    one colour per level, with the parabola in log N fitted to it and its vertex (hollow where the
    vertex is at the edge of the level's sizes, `allocation.isoflop_optima`'s `edge`)."""
    with _style():
        fig, ax = _axes(ax)
        colour = _filled_or_hollow(fig, ax, slices["C"], colorbar="compute C (FLOPs)", filled="vertex inside the sizes",
                                   hollow="vertex at an edge", marker="D", s=36)
        for C, g in slices.groupby("C"):
            color = colour(C)
            ax.plot(g["N"], g["L"], "o", color=color, ms=4)
            x = np.log(g["N"].to_numpy(float))
            if len(g) >= 3:
                coef = np.polyfit(x, g["L"].to_numpy(float), 2)
                xs = np.linspace(x.min(), x.max(), 100)
                ax.plot(np.exp(xs), np.polyval(coef, xs), color=color, lw=1)
        if optima is not None:
            for _, r in optima[optima["convex"]].iterrows():
                color = colour(r["C"])
                ax.scatter([r["N_opt"]], [r["L_opt"]], marker="D", s=36, zorder=4, edgecolors=[color],
                           facecolors="none" if r["edge"] else [color])
        ax.set(xscale="log", xlabel=AXIS_LABELS["N"], ylabel="validation loss (nats/token)")
    return fig


def compute_optimal_sizes(optima: dict, *, ax=None, reference: dict | None = None) -> Figure:
    """N_opt against C for several approaches, {label: (table with C and N_opt, a, intercept k_N)}, each
    its points and its line N_opt = k_N C^a; `reference` adds {label: a} as lines of that slope through
    the first approach's middle point (a slope to compare, not a fit)."""
    with _style():
        fig, ax = _axes(ax)
        mid = None
        for i, (label, (df, a, k)) in enumerate(optima.items()):
            ax.scatter(df["C"], df["N_opt"], color=f"C{i}", s=22, zorder=3, label=f"{label}: a = {a:.2f}")
            Cs = np.geomspace(df["C"].min(), df["C"].max(), 50)
            ax.plot(Cs, k * Cs ** a, color=f"C{i}", lw=1.2)
            if mid is None and len(df):
                mid = (float(np.exp(np.log(df["C"]).mean())), float(np.exp(np.log(df["N_opt"]).mean())),
                       float(df["C"].min()), float(df["C"].max()))
        if mid is not None:
            c0, n0, lo, hi = mid
            Cs = np.geomspace(lo, hi, 50)
            for j, (label, a) in enumerate((reference or {}).items()):
                ax.plot(Cs, n0 * (Cs / c0) ** a, color="grey", ls=("--", ":", "-.")[j % 3], lw=1,
                        label=f"slope {a:.2f} ({label})")
        ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="compute-optimal size N_opt")
        ax.legend(fontsize="small")
    return fig


def depth_latency(timings: pd.DataFrame, fits: pd.DataFrame | None = None, *, measures=None, axes=None) -> Figure:
    """Seconds against n_layer at a fixed N, one panel per measure and one line per fixed N
    (`depth.latency_table`), the quartiles over repeats as error bars and, with `fits`
    (`depth.fit_table`), the linear fit in depth dashed (Petty et al. 2024, Fig. 1)."""
    measures = list(measures or dict.fromkeys(timings["measure"]))
    with _style():
        if axes is None:
            fig, axes = _axes(None, ncols=len(measures), size=(4.2, 3.8))
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
        norm = _log_norm(timings["fixed_N"])
        cmap = mpl.colormaps[CMAP]
        for ax, measure in zip(axes, measures):
            for N, g in timings[timings["measure"] == measure].groupby("fixed_N"):
                g = g.sort_values("n_layer")
                ms = 1e3 * g["median_s"]
                err = 1e3 * np.vstack([g["median_s"] - g["q25_s"], g["q75_s"] - g["median_s"]])
                colour = cmap(norm(N))
                ax.errorbar(g["n_layer"], ms, yerr=err, fmt="o", color=colour, capsize=2, label=f"N ≈ {N:,.0f}")
                if fits is not None:
                    f = fits[(fits["fixed_N"] == N) & (fits["measure"] == measure)]
                    if len(f):
                        L = np.linspace(g["n_layer"].min(), g["n_layer"].max(), 50)
                        ax.plot(L, 1e3 * (f["intercept_s"].iloc[0] + f["slope_s"].iloc[0] * L), "--", color=colour,
                                lw=1)
            ax.set(xlabel="layers n_layer (N fixed)", ylabel="milliseconds", title=measure, ylim=(0, None))
            ax.legend(fontsize="small")
    return fig


def loss_by_depth(summary: pd.DataFrame, *, y: str = "ppl_mean", err: str = "ppl_sd", ax=None) -> Figure:
    """Validation perplexity (or loss) against n_layer at each fixed size, the mean over seeds with
    its standard deviation as error bars (`depth.by_depth`; Petty et al. 2024, Fig. 2)."""
    with _style():
        fig, ax = _axes(ax)
        groups, _ = _coloured_groups(summary, "size", "n_layer")
        for size, g, colour in groups:
            ax.errorbar(g["n_layer"], g[y], yerr=g[err].fillna(0), fmt="o-", color=colour, capsize=3,
                        label=f"N ≈ {size:,.0f}")
        ax.set(xscale="log", xlabel="layers n_layer (N fixed)",
               ylabel="validation perplexity" if y.startswith("ppl") else "validation loss (nats/token)")
        ax.set_xticks(sorted(summary["n_layer"].unique()), labels=[str(int(v)) for v in sorted(summary["n_layer"].unique())])
        ax.legend(fontsize="small")
    return fig


def overfit_by_size(t: pd.DataFrame, nd=None, *, ax=None) -> Figure:
    """The loss at the early-stopping step against N, one line per dataset size D (`overfit.table`),
    with Eq. 1.5's fit (`overfit.NDFit`) dashed at each D (Kaplan et al. Fig. 9, left)."""
    with _style():
        fig, ax = _axes(ax)
        groups, (norm, cmap) = _coloured_groups(t, "D", "N")
        grid = np.geomspace(t["N"].min(), t["N"].max(), 50)
        for D, g, colour in groups:
            ax.plot(g["N"], g["L"], "o", color=colour)
            if nd is not None:
                ax.plot(grid, nd.loss(grid, D), "--", color=colour, lw=1)
        ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="test loss at the stop (nats/token)")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="dataset size D (tokens)")
    return fig


def overfit_collapse(t: pd.DataFrame, x: np.ndarray, delta: np.ndarray, nd, *, ax=None) -> Figure:
    """Overfitting δL = L(N, D)/L(N, ∞) − 1 against x = N^(α_N/α_D)/D, coloured by N, with Eq. 4.3's
    curve (Kaplan et al. Fig. 9, right); `x` and `delta` from `overfit.collapse_x` and `overfit.delta_L`."""
    from .overfit import delta_L_law

    with _style():
        fig, ax = _axes(ax)
        norm = _log_norm(t["N"])
        cmap = mpl.colormaps[CMAP]
        ax.scatter(x, delta, c=[cmap(norm(n)) for n in t["N"]], s=30, zorder=3)
        grid = np.geomspace(np.min(x), np.max(x), 100)
        ax.plot(grid, delta_L_law(grid, nd), "--", color="grey", label="Eq. 4.3 with the fitted constants")
        ax.set(xscale="log", xlabel=f"N^{nd.ratio:.2f} / D", ylabel="δL = L(N, D) / L(N, ∞) − 1")
        ax.axhline(0, color="grey", lw=0.6)
        ax.legend(fontsize="small")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="non-embedding parameters N")
    return fig


def overfit_early_stopping(es: pd.DataFrame, bounds: Sequence[tuple[float, float, str]], *, ax=None,
                           ylabel: str = "early-stopping step S_stop") -> Figure:
    """The early-stopping step S against the excess loss L(N, D) − L(N, ∞), coloured by D, with Eq. 5.7's
    lower bound S_c/excess^(1/α_S) for each (S_c, α_S, label) of `bounds` (Kaplan et al. Fig. 16, left);
    `es` from `overfit.early_stopping`, runs with no positive excess left out (they have no place on the
    log axis). The y range is the points', so a bound that runs far above or below them leaves the frame."""
    from .overfit import stop_bound

    pts = es[es["excess"] > 0]
    with _style():
        fig, ax = _axes(ax)
        if len(pts):
            norm = _log_norm(pts["D"])
            cmap = mpl.colormaps[CMAP]
            ax.scatter(pts["excess"], pts["S"], c=[cmap(norm(d)) for d in pts["D"]], s=30, zorder=3)
            lo, hi = pts["S"].min(), pts["S"].max()
            grid = np.geomspace(pts["excess"].min(), pts["excess"].max(), 100)
            for (S_c, alpha_S, label), style in zip(bounds, ("--", ":", "-.")):
                ax.plot(grid, stop_bound(grid, S_c, alpha_S), style, color="grey", label=label)
            ax.set_ylim(lo / 10, hi * 10)
            if bounds:
                ax.legend(fontsize="small")
            fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="dataset size D (tokens)")
        ax.set(xscale="log", yscale="log", xlabel="L(N, D) − L(N, ∞) (nats/token)", ylabel=ylabel)
    return fig


def overfit_curves(curves: pd.DataFrame, *, ax=None) -> Figure:
    """One size's runs along training (Kaplan et al. Fig. 16, right; `curves` from `overfit.size_curves`):
    validation loss solid and training loss dashed against tokens processed, one colour per dataset
    size D, the whole-split run in black, a circle at each run's lowest validation loss (the model
    early stopping keeps). Evaluations at 0 tokens have no place on the log axis and are left out."""
    from matplotlib.lines import Line2D

    pts = curves[curves["tokens"] > 0]
    with _style():
        fig, ax = _axes(ax)
        subsets = pts[~pts["whole_split"]]
        groups = []
        if len(subsets):
            groups, (norm, cmap) = _coloured_groups(subsets, "D", "tokens")
            fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="dataset size D (tokens)")
        whole = pts[pts["whole_split"]]
        if len(whole):
            groups.append((whole["D"].iloc[0], whole.sort_values("tokens"), "black"))
        for _, g, colour in groups:
            for _, run in g.groupby("key"):
                ax.plot(run["tokens"], run["val_loss"], "-", color=colour, lw=1.5)
                train = run[run["train_loss"].notna()]
                ax.plot(train["tokens"], train["train_loss"], "--", color=colour, lw=1)
                stop = run[run["tokens"] == run["stop_tokens"]]
                ax.scatter(stop["tokens"], stop["val_loss"], color=colour, edgecolors="white", s=40, zorder=3)
        handles = [Line2D([], [], color="grey", ls="-", label="validation loss"),
                   Line2D([], [], color="grey", ls="--", label="training loss (dropout on)"),
                   Line2D([], [], color="grey", marker="o", ls="", label="early-stopping point")]
        if len(whole):
            handles.append(Line2D([], [], color="black", label=f"whole split (D = {whole['D'].iloc[0]:,.0f})"))
        ax.legend(handles=handles, fontsize="small")
        ax.set(xscale="log", xlabel="tokens processed", ylabel="loss (nats/token)")
    return fig


# The figures of the budget and context chapters keep matplotlib's own look (no book style, no
# constrained layout), as they had when the chapters drew them with pyplot.
def _plain_axes(ax, size, ncols: int = 1, **subplots):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size)
    return fig, fig.subplots(1, ncols, **subplots)


def serving_tradeoff(serve: pd.DataFrame) -> Figure:
    """The lifetime-optimal model against the tokens it serves, one colour per law (cf. Sardana et al.
    2024, Fig. 2). Left: its N and D over the compute-optimal model's (solid and dashed, log scales);
    right: the share of the lifetime FLOPs it saves, in percent.

    `serve` has columns law, "T / D_opt", "N / N_opt", "D / D_opt" and "FLOPs saved" (a fraction); a
    ratio of 0 (no serving) has no place on the log axis and is left out.
    """
    fig, axes = _plain_axes(None, (10, 4), ncols=2)
    for i, (name, g) in enumerate(serve.groupby("law", sort=False)):
        x = g["T / D_opt"].replace(0, np.nan)
        axes[0].plot(x, g["N / N_opt"], "o-", color=f"C{i}", label=f"{name}: N")
        axes[0].plot(x, g["D / D_opt"], "s--", color=f"C{i}", label=f"{name}: D")
        axes[1].plot(x, 100 * g["FLOPs saved"], "o-", color=f"C{i}", label=name)
    axes[0].set(xscale="log", yscale="log", xlabel="tokens served T / compute-optimal training tokens D_opt",
                ylabel="lifetime-optimal / compute-optimal", title="Size and tokens of the cheapest model")
    axes[1].set(xscale="log", xlabel="tokens served T / compute-optimal training tokens D_opt",
                ylabel="FLOPs saved over the compute-optimal model (%)", title="What it saves")
    for ax, level in zip(axes, (1.0, 0.0)):
        ax.axhline(level, color="grey", lw=0.8)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def latency_price(bounds: pd.DataFrame, ms_per_layer: float, *, ax=None) -> Figure:
    """The lifetime FLOPs under a latency bound over those without it (log scale), against the bound,
    tighter to the right. `bounds` has columns "latency bound (ms)" and "extra FLOPs" (a fraction)."""
    fig, ax = _plain_axes(ax, (6, 4))
    ax.plot(bounds["latency bound (ms)"], 1 + bounds["extra FLOPs"], "o-")
    ax.set(xlabel=f"latency bound at batch 1 (ms per token, at {ms_per_layer:.3g} ms a layer)", yscale="log",
           ylabel="lifetime FLOPs / without the bound", title="The price of a latency bound")
    ax.invert_xaxis()
    return fig


def loss_at_positions(curves: pd.DataFrame, positions=(1, 2, 4, 8, 16, 32, 64, 128), *, ax=None) -> Figure:
    """The loss at a few positions T of the context along training, one line per position (cf. Kaplan
    Fig. 20 right). `curves` is one model's `store.per_position_curves` (columns T, tokens, loss, N);
    the positions it lacks are left out."""
    fig, ax = _plain_axes(ax, (6.5, 4))
    picks = [t for t in positions if t in set(curves["T"])]
    cmap = mpl.colormaps[CMAP]
    for i, t in enumerate(picks):
        g = curves[curves["T"] == t].sort_values("tokens")
        ax.plot(g["tokens"], g["loss"], color=cmap(i / max(len(picks) - 1, 1)), label=f"T = {t}")
    ax.set(xscale="log", xlabel="tokens trained", ylabel="loss at position T (nats/token)",
           title=f"Loss at a few positions along training, N = {int(curves['N'].iloc[0]):,}")
    ax.legend(fontsize="small")
    return fig


def context_difference(diff: pd.DataFrame, short: int, full: int, *, ax=None) -> Figure:
    """The loss of a short-context model minus the full-context model's at each position, one line per
    size coloured by N (cf. Kaplan Fig. 21). `diff` has columns N, T and "short minus full"; `short`
    and `full` are the two contexts' lengths, for the label."""
    fig, ax = _plain_axes(ax, (6.5, 4))
    norm = _log_norm(diff["N"])
    cmap = mpl.colormaps[CMAP]
    for N, g in diff.groupby("N"):
        ax.plot(g["T"], g["short minus full"], color=cmap(norm(N)), label=f"N = {N:,}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="position T in the context", ylabel=f"loss, n_ctx {short} minus n_ctx {full} (nats)",
           title="Where a short context wins (below 0) and loses")
    ax.legend(fontsize="small")
    return fig


def recurrent(runs: pd.DataFrame) -> Figure:
    """Validation loss of plain and recurrent transformers, one line per number of passes: against N
    (shared parameters counted once, left) and against C (every pass counted, right); cf. Kaplan
    Fig. 17. `runs` has columns N, C, final_val_loss and n_recur."""
    fig, axes = _plain_axes(None, (10, 4), ncols=2, sharey=True)
    for k, g in runs.groupby("n_recur"):
        g = g.sort_values("N")
        label = f"{k} pass{'es' if k > 1 else ''}"
        axes[0].plot(g["N"], g["final_val_loss"], "o-", label=label)
        axes[1].plot(g["C"], g["final_val_loss"], "o-", label=label)
    axes[0].set(xscale="log", xlabel="non-embedding parameters N (shared ones counted once)",
                ylabel="validation loss (nats/token)", title="Per parameter")
    axes[1].set(xscale="log", xlabel="training compute C (FLOPs, every pass counted)", title="Per FLOP")
    for ax in axes:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def steps_against_examples(best: pd.DataFrame, crit: pd.DataFrame | None = None, *, ax=None) -> Figure:
    """Steps S against examples E = B S to reach each loss target, one colour per target, at one
    model size (`batch_scan.best_rate_steps`); with `crit` (`batch_scan.critical_by_target`), the
    fitted (S/S_min − 1)(E/E_min − 1) = 1 dashed (Kaplan et al. Fig. 18; McCandlish et al. 2018)."""
    with _style():
        fig, ax = _axes(ax)
        targets = sorted(best["target"].unique(), reverse=True)
        cmap = mpl.colormaps[CMAP]
        colours = {L: cmap(i / max(len(targets) - 1, 1)) for i, L in enumerate(targets)}
        for L, g in best.groupby("target"):
            g = g.sort_values("batch_size")
            ax.plot(g["E"], g["S"], "o", color=colours[L], label=f"L = {L:.2f}")
            if crit is not None:
                c = crit[np.isclose(crit["target"], L)]
                if len(c) and np.isfinite(c["S_min"].iloc[0]):
                    S_min, E_min = c["S_min"].iloc[0], c["E_min"].iloc[0]
                    S = np.geomspace(S_min * 1.02, max(g["S"].max(), S_min * 1.1) * 1.5, 100)
                    ax.plot(E_min * (1 + 1 / (S / S_min - 1)), S, "--", color=colours[L], lw=1)
        ax.set(xscale="log", yscale="log", xlabel="examples E = B S (sequences)", ylabel="steps S")
        ax.legend(fontsize="small", title="target (nats/token)")
    return fig


def critical_batch_by_loss(crit: pd.DataFrame, law=None, noise: pd.DataFrame | None = None, *, ax=None) -> Figure:
    """B_crit (tokens) against the loss target, one colour per model size, with 95% intervals; with
    `law` (`batch.fit_bcrit_loss`), B*/L^(1/α_B) dashed; with `noise` (columns val_loss, B_simple in
    tokens), the gradient noise scale measured along training (Kaplan et al. Fig. 10)."""
    with _style():
        fig, ax = _axes(ax)
        ok = crit.dropna(subset=["B_crit"])
        norm = _log_norm(crit["N"])
        cmap = mpl.colormaps[CMAP]
        for N, g in ok.groupby("N"):
            err = np.vstack([g["B_crit"] - g["B_crit_lo"], g["B_crit_hi"] - g["B_crit"]])
            # a percentile interval need not hold the point estimate: draw only the side that does
            ax.errorbar(g["target"], g["B_crit"], yerr=np.clip(np.where(np.isfinite(err), err, 0), 0, None), fmt="o",
                        capsize=2,
                        color=cmap(norm(N)), label=f"N = {N:,}")
        if law is not None and len(ok):
            L = np.geomspace(ok["target"].min(), ok["target"].max(), 50)
            ax.plot(L, law.predict(L), "--", color="grey", label="B*/L^(1/α_B)")
        if noise is not None and len(noise):
            for N, g in noise.groupby("N"):
                g = g.sort_values("val_loss")
                ax.plot(g["val_loss"], g["B_simple"], ":", color=cmap(norm(N)), lw=1)
            ax.plot([], [], ":", color="grey", label="noise scale B_simple")
        ax.set(xscale="log", yscale="log", xlabel="loss target (nats/token)", ylabel="critical batch B_crit (tokens)")
        ax.legend(fontsize="small")
    return fig


def loss_against_min_steps(adj: pd.DataFrame, ns=None, *, ax=None) -> Figure:
    """The loss against S_min, the steps at the critical batch (`training_time.adjusted`), one line
    per model size, with Eq. 1.6's fit (`fit.kaplan_ns` parameters, `ns`) dashed (Kaplan et al. Fig. 4, right)."""
    from .fit import kaplan_ns

    with _style():
        fig, ax = _axes(ax)
        groups, (norm, cmap) = _coloured_groups(adj, "N", "S_min")
        for N, g, colour in groups:
            ax.plot(g["S_min"], g["val_loss"], color=colour, lw=1.2)
            if ns is not None:
                S = np.geomspace(g["S_min"].min(), g["S_min"].max(), 50)
                ax.plot(S, kaplan_ns(N, S, **ns), "--", color=colour, lw=0.9)
        ax.set(xscale="log", yscale="log", xlabel="S_min, steps at the critical batch", ylabel="validation loss (nats/token)")
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="non-embedding parameters N")
    return fig


def at_fixed_compute_and_steps(at_C: pd.DataFrame, at_S: pd.DataFrame, pred_C: pd.DataFrame | None = None,
                               pred_S: pd.DataFrame | None = None) -> Figure:
    """The loss against N at fixed compute C_min (left) and at fixed steps S_min (right), one colour a
    level, read off the curves (`training_time.loss_at`: columns N, level, val_loss), with Eq. 1.6's
    prediction as lines where given (same columns, on a grid of N). Kaplan et al. Fig. 11."""
    with _style():
        fig, axes = _axes(None, 2)
        for ax, pts, pred, what, fmt in ((axes[0], at_C, pred_C, "C_min", "{:.1e} FLOPs"),
                                         (axes[1], at_S, pred_S, "S_min", "{:,.0f} steps")):
            pts = pts.dropna(subset=["val_loss"])
            if len(pts):
                groups, _ = _coloured_groups(pts, "level", "N")
                for level, g, colour in groups:
                    ax.plot(g["N"], g["val_loss"], "o", color=colour, ms=4, label=f"{what} = {fmt.format(level)}")
                    if pred is not None:
                        line = pred[np.isclose(pred["level"], level)].sort_values("N")
                        ax.plot(line["N"], line["val_loss"], "--", color=colour, lw=0.9)
                ax.legend(fontsize="x-small")
            ax.set(xscale="log", xlabel="non-embedding parameters N", ylabel="validation loss (nats/token)",
                   title=f"at fixed {what}")
    return fig


def steps_to_targets(steps: pd.DataFrame, *, ax=None) -> Figure:
    """The minimum steps S_min to reach each loss target against N (`training_time.steps_to_loss`: columns
    N, target, S_min), one line a target. Kaplan et al. Fig. 19 (left)."""
    with _style():
        fig, ax = _axes(ax)
        pts = steps.dropna(subset=["S_min"])
        groups, _ = _coloured_groups(pts, "target", "N")
        for target, g, colour in groups:
            ax.plot(g["N"], g["S_min"], "o-", color=colour, ms=4, lw=1.0, label=f"L = {target:.2f}")
        ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters N",
               ylabel="S_min, steps at the critical batch")
        ax.legend(fontsize="x-small", title="loss target (nats/token)", title_fontsize="x-small")
    return fig


def off_optimum(frontier, *, k=None, ax=None) -> Figure:
    """The compute (and the steps) a model k times the compute-efficient size needs to reach the same
    loss, over the optimum's (`frontier.Frontier.off_optimum`, App. B.4; Kaplan et al. Fig. 12)."""
    k = np.geomspace(0.2, 10, 200) if k is None else np.asarray(k, float)
    compute, steps = frontier.off_optimum(k)
    with _style():
        fig, ax = _axes(ax)
        ax.plot(k, compute, color="C0", label="compute C / C_opt")
        ax.plot(k, steps, color="C1", ls="--", label="steps S / S_opt")
        ax.axhline(1, color="grey", lw=0.6)
        ax.set(xscale="log", yscale="log", xlabel="model size over the compute-efficient size, N / N_opt",
               ylabel="over the compute-efficient run")
        ax.legend(fontsize="small")
    return fig


def frontier_and_data(frontier, alpha_D: float, D_c: float, crossing: dict, *, C=None, ax=None) -> Figure:
    """L(C_min) of the compute-efficient frontier against L(D) at the tokens that frontier processes,
    D = B S, with their crossing (§6.3, Kaplan et al. Fig. 15); C in FLOPs."""
    hi = crossing["C"] * 100 if np.isfinite(crossing["C"]) else 1e30
    C = np.geomspace(1e12, hi, 300) if C is None else np.asarray(C, float)
    with _style():
        fig, ax = _axes(ax)
        ax.plot(C, frontier.loss(C), color="C0", label="L(C_min), the compute-efficient frontier")
        ax.plot(C, (D_c / frontier.D_opt(C)) ** alpha_D, color="C3", ls="--", label="L(D) at its tokens D = B S")
        if np.isfinite(crossing["C"]):
            ax.scatter([crossing["C"]], [crossing["L"]], color="k", zorder=3, label="where they cross")
        ax.set(xscale="log", yscale="log", xlabel="compute C_min (FLOPs)", ylabel="loss (nats/token)")
        ax.legend(fontsize="small")
    return fig


def schedules(runs: pd.DataFrame, cfgs: dict, *, axes=None) -> Figure:
    """Left, each run's learning rate against the step (`schedules.lr_curve`); right, its final loss
    against the summed rate, the area under that curve (Kaplan et al. Fig. 22). `runs` is
    `schedules.table`, `cfgs` the RunConfig of each key."""
    from .schedules import lr_curve

    with _style():
        if axes is None:
            fig, axes = _axes(None, ncols=2, size=(5.0, 4.0))
        fig = axes[0].figure
        for i, r in enumerate(runs.itertuples()):
            colour = f"C{i % 10}"
            axes[0].plot(lr_curve(cfgs[r.key]), color=colour, lw=1.2, label=r.label)
            axes[1].scatter([r.summed_lr], [r.final_val_loss], color=colour, s=36, zorder=3)
        axes[0].set(xlabel="step", ylabel="learning rate", title="The schedules")
        axes[1].set(xlabel="summed learning rate (the area under the schedule)",
                    ylabel="final validation loss (nats/token)", title="Final loss against the area")
        axes[0].legend(fontsize="x-small")
    return fig
