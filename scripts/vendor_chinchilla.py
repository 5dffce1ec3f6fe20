"""Vendor Epoch AI's digitisation of Hoffmann et al. (2022) Fig. 4 into data/external/chinchilla/.

Usage:  python scripts/vendor_chinchilla.py SOURCE [--out DIR]

SOURCE is a checkout of github.com/epoch-research/analyzing-chinchilla, a bare git directory of it
(the file is read at the pinned commit), or the file data/svg_extracted_data.csv itself. Nothing is
downloaded. The source file's SHA-256 is checked against the pinned one, so that a changed upstream
file is an error, not a silent change of the book's numbers. See data/external/chinchilla/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = "epoch-research/analyzing-chinchilla"
COMMIT = "92258837425e1b5f2851d624287f0120583a3d0e"  # "update README", 14 May 2024: the newest
SOURCE_PATH = "data/svg_extracted_data.csv"
SOURCE_SHA256 = "193478df4e90f040016431996c45682659306840ecdadf83cfb9cd5ca0aa1b30"
OUT = Path(__file__).resolve().parents[1] / "data" / "external" / "chinchilla"

# Hoffmann et al. 2022, §3.2: the nine IsoFLOP budgets (FLOPs).
ISOFLOP_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)
# A point belongs to a budget when its digitised C lies within this many decades of it (a factor
# 1.12). The digitised C of a budget's points scatter by about +-0.05 decades (the marker's position
# read off the SVG); the histogram of distances to the nearest budget peaks inside +-0.05 and has a
# flat tail beyond it, which is the other runs of the figure.
ISOFLOP_TOLERANCE_DEX = 0.05
# Points of one model size differ in their digitised N by less than 2e-6 (relative); distinct sizes
# by more than 3e-3. A gap above this joins them into one size.
SIZE_GAP = 1e-4
N_OUTLIERS = 5  # Besiroglu et al. 2024 leave out the five highest losses (all at 1e19 FLOPs, large N)


def read_source(source: Path) -> bytes:
    if source.is_file():
        data = source.read_bytes()
    elif (source / SOURCE_PATH).is_file():
        data = (source / SOURCE_PATH).read_bytes()
    elif (source / "HEAD").is_file() or (source / ".git").exists():
        data = subprocess.run(["git", f"--git-dir={source / '.git' if (source / '.git').exists() else source}",
                               "show", f"{COMMIT}:{SOURCE_PATH}"], check=True, capture_output=True).stdout
    else:
        raise SystemExit(f"error: {source} is neither {SOURCE_PATH}, a checkout of {REPO}, nor its git directory")
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"error: {SOURCE_PATH} has SHA-256 {digest}, not the pinned {SOURCE_SHA256}")
    return data


def sizes(N: np.ndarray) -> np.ndarray:
    """One label a model size: the median digitised N of the points that differ by less than SIZE_GAP."""
    order = np.argsort(N)
    lN = np.log(N[order])
    cluster = np.concatenate([[0], np.cumsum(np.diff(lN) > SIZE_GAP)])
    label = np.empty_like(N)
    for k in np.unique(cluster):
        label[order[cluster == k]] = float(f"{np.median(N[order][cluster == k]):.6g}")
    return label


def tables(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every point of Fig. 4, the points of the IsoFLOP budgets)."""
    N = raw["Model Size"].to_numpy(float)
    C = raw["Training FLOP"].to_numpy(float)
    L = raw["loss"].to_numpy(float)
    worst = np.sort(L)[-N_OUTLIERS]
    budgets = np.array(ISOFLOP_BUDGETS)
    dist = np.log10(C)[:, None] - np.log10(budgets)[None, :]
    nearest = np.argmin(np.abs(dist), axis=1)
    on_budget = np.abs(dist[np.arange(len(C)), nearest]) < ISOFLOP_TOLERANCE_DEX
    points = pd.DataFrame({
        "N": N, "C": C, "D": C / (6 * N), "L": L, "size": sizes(N),
        "C_isoflop": np.where(on_budget, budgets[nearest], np.nan),
        "outlier": L >= worst,
    })
    iso = points[on_budget].rename(columns={"C": "C_digitised", "C_isoflop": "C"})
    iso = iso[["C", "N", "L", "C_digitised", "size", "outlier"]].sort_values(["C", "N"]).reset_index(drop=True)
    return points, iso


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    raw = pd.read_csv(io.BytesIO(read_source(args.source)))
    points, iso = tables(raw)
    args.out.mkdir(parents=True, exist_ok=True)
    points.to_csv(args.out / "fig4_points.csv", index=False)
    iso.to_csv(args.out / "isoflop.csv", index=False)
    print(f"{len(points)} points ({int(points['outlier'].sum())} outliers), {points['size'].nunique()} sizes; "
          f"{len(iso)} on {iso['C'].nunique()} IsoFLOP budgets -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
