#!/usr/bin/env bash
# Extend the sweeps on a lent GPU machine (no network there): the `gpu` profile, resumable.
#
# Here, before the call:  bash scripts/gpu_sweep.sh prepare
#   copies the tokenized corpus (~20 MB) into .carry/ (git-ignored) and records the commit;
# on the GPU machine (carry .carry):  bash scripts/gpu_sweep.sh run SWEEP SECONDS [WORKERS]
#   trains what runs/ lacks of SWEEP (lr, ladder, data, shape, lstm or all) until SECONDS have
#   passed, then packs the new records into $OUT/runs_gpu.tgz; back here: tar xzf that file.
#
# Measured on an H200 (2026-11-26): 12 workers time-sharing the GPU made a 2M-token run of a
# sub-million-parameter model take 16-88 s; these models are launch-bound, so fewer workers
# (4-8) waste less of the lease on contention.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
  prepare)
    cache="${SCALING_LIB_CACHE:-$HOME/.cache/scaling_lib}"
    mkdir -p .carry/cache/corpora/books
    rm -rf .carry/cache/corpora/books/bpe4096
    cp -r "$cache/corpora/books/bpe4096" .carry/cache/corpora/books/
    git rev-parse HEAD > .carry/commit
    du -sh .carry
    ;;
  run)
    sweep="${2:?sweep name}"; seconds="${3:?seconds}"; workers="${4:-8}"
    export SCALING_LIB_CACHE="$PWD/.carry/cache" SCALING_LIB_COMMIT="$(cat .carry/commit)" PYTHONUNBUFFERED=1
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi -L
    python3 -m scaling_lib sweep "$sweep" --profile gpu --workers "$workers" --deadline "$seconds" \
      | tee "${OUT:-.}/sweep.log" | grep -E '^\[' || true
    tar czf "${OUT:-.}/runs_gpu.tgz" runs/*-gpu
    ;;
  *)
    echo "usage: $0 prepare | run SWEEP SECONDS [WORKERS]" >&2
    exit 2
    ;;
esac
