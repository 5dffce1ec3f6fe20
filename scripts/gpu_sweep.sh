#!/usr/bin/env bash
# Extend the sweeps on a lent GPU machine (no network there): the `gpu` profile, resumable, packed
# into a few long-lived worker processes that share the GPU.
#
# Here, before the call:  bash scripts/gpu_sweep.sh prepare
#   copies the tokenized corpus (~20 MB) into .carry/ (git-ignored) and records the commit;
# on the GPU machine (carry .carry), one call:
#   bash scripts/gpu_sweep.sh plan SWEEP [K,K]
#     times every shape SWEEP lacks on the GPU with the training step itself, alone and in K processes
#     at once (default 4,8), and predicts the device time of the sweep for 1 to 12 workers:
#     $OUT/gpu_plan.json (`gpu-plan --json`), the table on stdout;
#   bash scripts/gpu_sweep.sh run SWEEP SECONDS [WORKERS]
#     trains what runs/ lacks of SWEEP (lr, ladder, data, shape, lstm or all) until SECONDS have
#     passed, in WORKERS worker processes kept for the whole sweep (--runs-per-worker 0: no process
#     start and CUDA context a run); WORKERS 'auto' (the default) takes the plan's choice when
#     `plan` ran first in the same call (`plan ladder && run ladder 500`), else 4; then packs the
#     new records into $OUT/runs_gpu.tgz;
# back here: tar xzf that file, and plan the rest from the GPU's own rates:
#   python -m scaling_lib gpu-plan SWEEP --profile gpu --rates gpu_plan.json
#
# Measured on an H200 (2026-11-26): 12 workers time-sharing the GPU, a fresh process a run, made a
# 2M-token run of a sub-million-parameter model take 16-88 s; these models are launch-bound, and
# `plan` measures how much k processes at once gain (or lose) on the GPU at hand.
# PROFILE (default gpu) and SCALING_LIB_RUNS (default runs/) may be set, to try the script elsewhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile="${PROFILE:-gpu}"
store="${SCALING_LIB_RUNS:-runs}"
out="${OUT:-.}"
device_env() {
  export SCALING_LIB_CACHE="$PWD/.carry/cache" SCALING_LIB_COMMIT="$(cat .carry/commit)" PYTHONUNBUFFERED=1
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  if command -v nvidia-smi >/dev/null; then nvidia-smi -L; fi
}

case "${1:-}" in
  prepare)
    cache="${SCALING_LIB_CACHE:-$HOME/.cache/scaling_lib}"
    mkdir -p .carry/cache/corpora/books
    rm -rf .carry/cache/corpora/books/bpe4096
    cp -r "$cache/corpora/books/bpe4096" .carry/cache/corpora/books/
    git rev-parse HEAD > .carry/commit
    du -sh .carry
    ;;
  plan)
    sweep="${2:?sweep name}"; at_once="${3:-4,8}"
    device_env
    python3 -m scaling_lib gpu-plan "$sweep" --profile "$profile" --store "$store" --measure-processes "$at_once" \
      --processes 1,2,4,6,8,12 --json > "$out/gpu_plan.json"
    python3 -m scaling_lib gpu-plan "$sweep" --profile "$profile" --store "$store" --rates "$out/gpu_plan.json" \
      --processes 1,2,4,6,8,12 --quiet
    ;;
  run)
    sweep="${2:?sweep name}"; seconds="${3:?seconds}"; workers="${4:-auto}"
    device_env
    if [ "$workers" = auto ]; then
      workers=4
      if [ -f "$out/gpu_plan.json" ]; then
        workers="$(python3 -c 'import json, sys; from scaling_lib.gpuplan import best
print(best(json.load(open(sys.argv[1])))["processes"])' "$out/gpu_plan.json")"
      fi
      echo "workers: $workers"
    fi
    python3 -m scaling_lib sweep "$sweep" --profile "$profile" --store "$store" --workers "$workers" \
      --runs-per-worker 0 --deadline "$seconds" | tee "$out/sweep.log" | grep -E '^\[' || true
    if compgen -G "$store/*-gpu" >/dev/null; then tar czf "$out/runs_gpu.tgz" "$store"/*-gpu; else echo "no $store/*-gpu to pack"; fi
    ;;
  *)
    echo "usage: $0 prepare | plan SWEEP [K,K] | run SWEEP SECONDS [WORKERS|auto]" >&2
    exit 2
    ;;
esac
