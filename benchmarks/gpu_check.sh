#!/usr/bin/env bash
# GPU check: the CUDA paths of pixelwise, end to end, in one prepared run of under 8 minutes on one GPU.
#
#   benchmarks/gpu_check.sh                  # on a machine with one CUDA GPU
#   benchmarks/gpu_check.sh --cpu-dry-run    # the same steps at tiny sizes on a CPU (tests this script)
#
# Steps: environment, `pixelwise bench --quick` (its rows on CUDA), `data synth`, a 2-epoch `train`,
# `evaluate` and `predict` on that run, a 1-process `torchrun ... train` (nccl on CUDA), and ONNX export +
# `predict --engine onnx` when onnxruntime has the CUDA provider. A failing step does not stop the others; the
# table at the end (step, seconds, status, result) shows what failed and why. Everything is written into a
# temporary folder; the table also goes to $OUT/gpu_check.md when $OUT is set (the device runner's folder that
# comes back), else beside the work files (--report DIR chooses).
#
# Python: .venv (made by `make setup`, run here when .venv is missing), or PIXELWISE_PYTHON=python3 for an
# interpreter that already holds torch and pixelwise's dependencies (pixelwise itself is taken from src/).
set -u

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "options: --cpu-dry-run  --full-bench (all models, not --quick)  --report DIR"
    echo "         --clean (remove the work folder at the end)"
}

DRY=0
FULL_BENCH=0
CLEAN=0
REPORT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-dry-run) DRY=1 ;;
        --full-bench) FULL_BENCH=1 ;;
        --clean) CLEAN=1 ;;
        --report) REPORT="${2:?--report needs a folder}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 2
STARTED=$(date +%s)
if [ "$DRY" -eq 1 ]; then BUDGET=1500; else BUDGET=450; fi  # seconds for all steps: the GPU run stays under 8 min

if [ -n "${PIXELWISE_PYTHON:-}" ]; then
    PY="$PIXELWISE_PYTHON"
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    PIXELWISE=("$PY" -m pixelwise)
    TORCHRUN=("$PY" -m torch.distributed.run)
else
    if [ ! -x .venv/bin/pixelwise ]; then
        echo "no .venv: running make setup" >&2
        make setup || { echo "make setup failed: set PIXELWISE_PYTHON to an interpreter with torch" >&2; exit 2; }
    fi
    PY="$ROOT/.venv/bin/python"
    PIXELWISE=("$ROOT/.venv/bin/pixelwise")
    TORCHRUN=("$ROOT/.venv/bin/torchrun")
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pixelwise-gpu-check.XXXXXX")" || exit 2
mkdir -p "$WORK/logs"
if [ -z "$REPORT" ]; then
    if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then REPORT="$OUT"; else REPORT="$WORK"; fi
fi
mkdir -p "$REPORT" || exit 2
DATA="$WORK/data"
RUN="$WORK/run"
DDP_RUN="$WORK/run-torchrun"
# A stuck process group ends with an error instead of waiting for the step's timeout.
export PIXELWISE_DIST_TIMEOUT=120
export PYTHONUNBUFFERED=1

if [ "$DRY" -eq 1 ]; then
    MODE="cpu dry run"
    SYNTH=(--n 24 --size 64)
    TRAIN=(--size 64 --batch-size 4)
    BENCH=(--quick --size 64 --batch 4 --reps 1 --warmup 0 --images 32 --no-memory)
    LIMIT_BENCH=300; LIMIT_TRAIN=300; LIMIT_TORCHRUN=300; LIMIT_SHORT=240
else
    MODE="cuda"
    SYNTH=(--n 200 --size 128)
    TRAIN=()
    if [ "$FULL_BENCH" -eq 1 ]; then BENCH=(); else BENCH=(--quick); fi
    LIMIT_BENCH=170; LIMIT_TRAIN=90; LIMIT_TORCHRUN=90; LIMIT_SHORT=60
fi

NAMES=(); SECONDS_TAKEN=(); STATUSES=(); RESULTS=()
LAST_OK=0

cell() {  # one table cell: one line, no pipes, at most 110 characters
    printf '%s' "$1" | tr '\n|' ' /' | cut -c1-110
}

record() {  # name seconds status result
    NAMES+=("$1"); SECONDS_TAKEN+=("$2"); STATUSES+=("$3"); RESULTS+=("$(cell "$4")")
}

set_result() {  # replace the result of the last step (its summary, read from what it wrote)
    RESULTS[${#RESULTS[@]}-1]="$(cell "$1")"
}

fail_result() {  # fail the last step with a reason
    STATUSES[${#STATUSES[@]}-1]="FAIL"
    set_result "$1"
    LAST_OK=0
}

run_step() {  # name limit_seconds command...: runs it with a timeout, logs to logs/<name>.log, records a row
    local name="$1" limit="$2" left start rc secs last
    shift 2
    left=$(( BUDGET - ($(date +%s) - STARTED) ))
    if [ "$left" -lt 15 ]; then
        record "$name" 0 "skipped" "out of time (the check's budget is ${BUDGET} s)"
        LAST_OK=0
        return
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== $name (at most ${limit} s): $*" >&2
    start=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    secs=$(( ($(date +%s%N) - start) / 100000000 ))
    secs="$((secs / 10)).$((secs % 10))"
    last="$(grep -v '^[[:space:]]*$' "$WORK/logs/$name.log" | tail -n 1)"
    if [ "$rc" -eq 0 ]; then
        record "$name" "$secs" "ok" "$last"
        LAST_OK=1
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        record "$name" "$secs" "FAIL" "timed out after ${limit} s; log: logs/$name.log"
        LAST_OK=0
    else
        record "$name" "$secs" "FAIL" "exit $rc: $last"
        LAST_OK=0
    fi
}

summary() {  # python code that prints one line about files the last step wrote (pixelwise.runs.RunFolder)
    "$PY" - "$@" 2>>"$WORK/logs/summaries.log" || echo "(no summary: see logs/summaries.log)"
}

RUN_SUMMARY=$(cat <<'PY'
import csv, sys
from pixelwise.runs import RunFolder
run = RunFolder(sys.argv[1])
raw = run.read_config()
record = raw.get("record") or {**raw.get("extra", {}), **raw}  # config.json as recipe + record, or flat
rows = list(csv.DictReader(run.metrics_path.open()))
last = rows[-1] if rows else {}
device = record.get("device") or "?"
backend = "nccl" if str(device).startswith("cuda") else "gloo"
print(f"device {device}, {len(rows)} epochs, val Dice {float(last.get('val_dice', 'nan')):.3f}, "
      f"{float(last.get('images_per_s', 'nan')):.0f} images/s, processes {record.get('processes') or 1} "
      f"({backend} under torchrun)")
PY
)

# -- environment ---------------------------------------------------------------------------------------------
run_step environment 60 "$PY" -c '
import platform, torch
try:
    import onnxruntime
    providers = ",".join(p.replace("ExecutionProvider", "") for p in onnxruntime.get_available_providers())
except ImportError:
    providers = "no onnxruntime"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}, onnxruntime: {providers}, "
      f"python {platform.python_version()}")
'
CUDA_OK=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$DRY" -eq 0 ] && [ "$CUDA_OK" != 1 ]; then
    fail_result "torch sees no CUDA device, the steps below run on the CPU: $(tail -n 1 "$WORK/logs/environment.log")"
fi

# -- pixelwise bench -----------------------------------------------------------------------------------------
run_step bench "$LIMIT_BENCH" "${PIXELWISE[@]}" bench "${BENCH[@]}" --json "$WORK/bench.json"
if [ "$LAST_OK" -eq 1 ]; then
    set_result "$(summary "$WORK/bench.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
m = b["machine"]
train = b["train"]["models"]
name, row = next(iter(train.items()))
batch = b["settings"]["batch"]
inference = b.get("inference", {}).get("torch_default", {}).get(f"batch_{batch}", {}).get("images_per_s")
print(f"{m.get('device')} {m.get('gpu') or ''}: train {name} fp32 {row['fp32_nchw']:.1f}, "
      f"fast {row['fast']:.1f} images/s; inference batch {batch} {inference or float('nan'):.1f} images/s")
PY
)"
    cp "$WORK/bench.json" "$REPORT/bench.json" 2>/dev/null
fi

# -- data, training, evaluation, prediction -----------------------------------------------------------------
run_step synth "$LIMIT_SHORT" "${PIXELWISE[@]}" data synth "$DATA" "${SYNTH[@]}" --seed 0
[ "$LAST_OK" -eq 1 ] && set_result "$(ls "$DATA/images" | wc -l) images in $DATA"

run_step train "$LIMIT_TRAIN" "${PIXELWISE[@]}" train --data "$DATA" --out "$RUN" --epochs 2 "${TRAIN[@]}"
if [ "$LAST_OK" -eq 1 ]; then
    set_result "$(summary "$RUN" <<<"$RUN_SUMMARY")"
    if [ "$DRY" -eq 0 ] && ! grep -q "device cuda" <<<"${RESULTS[${#RESULTS[@]}-1]}"; then
        fail_result "trained, but not on CUDA: ${RESULTS[${#RESULTS[@]}-1]}"
    fi
fi

run_step evaluate "$LIMIT_SHORT" "${PIXELWISE[@]}" evaluate "$RUN"
if [ "$LAST_OK" -eq 1 ]; then
    set_result "$(summary "$RUN" <<'PY'
import json, sys
from pixelwise.runs import RunFolder
s = json.load(open(RunFolder(sys.argv[1]).eval_folder("test") / "summary.json"))
print(f"{s['images']} test images, Dice {s['mean']['dice']:.3f}, Jaccard {s['mean']['jaccard']:.3f} (default TTA)")
PY
)"
fi

run_step predict "$LIMIT_SHORT" "${PIXELWISE[@]}" predict "$RUN" "$DATA/images" --out "$WORK/predicted"
[ "$LAST_OK" -eq 1 ] && set_result "$(ls "$WORK/predicted" | grep -c '_mask.png$') masks written"

# -- torchrun, one process: nccl where torch sees CUDA (pixelwise.train.distributed), else gloo -------------
run_step torchrun "$LIMIT_TORCHRUN" "${TORCHRUN[@]}" --standalone --nproc_per_node 1 -m pixelwise train \
    --data "$DATA" --out "$DDP_RUN" --epochs 1 "${TRAIN[@]}"
if [ "$LAST_OK" -eq 1 ]; then
    set_result "$(summary "$DDP_RUN" <<<"$RUN_SUMMARY")"
    if [ "$DRY" -eq 0 ] && ! grep -q "nccl" <<<"${RESULTS[${#RESULTS[@]}-1]}"; then
        fail_result "ran, but not with nccl: ${RESULTS[${#RESULTS[@]}-1]}"
    fi
fi

# -- ONNX: on CUDA when onnxruntime has the CUDA provider; the dry run takes the CPU provider ---------------
HAS_CUDA_EP=$("$PY" -c 'import onnxruntime as o; print(int("CUDAExecutionProvider" in o.get_available_providers()))' \
    2>/dev/null || echo 0)
if [ "$HAS_CUDA_EP" = 1 ] || [ "$DRY" -eq 1 ]; then
    run_step onnx-export "$LIMIT_SHORT" "${PIXELWISE[@]}" export "$RUN" --format onnx
    if [ "$LAST_OK" -eq 1 ]; then
        run_step onnx-predict "$LIMIT_SHORT" "${PIXELWISE[@]}" predict "$RUN" "$DATA/images" \
            --out "$WORK/predicted-onnx" --engine onnx
        if [ "$LAST_OK" -eq 1 ]; then
            set_result "$(summary "$RUN" <<'PY'
import sys
from pixelwise.predict.onnx_engine import open_session
from pixelwise.runs import RunFolder
providers = open_session(RunFolder(sys.argv[1]).path / RunFolder.ONNX).get_providers()
print(f"masks written; onnxruntime ran on {providers[0]}")
PY
)"
            if [ "$DRY" -eq 0 ] && ! grep -q "CUDAExecutionProvider" <<<"${RESULTS[${#RESULTS[@]}-1]}"; then
                fail_result "onnxruntime fell back: ${RESULTS[${#RESULTS[@]}-1]}"
            fi
        fi
    fi
else
    record onnx-cuda 0 "skipped" "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu to check it)"
fi

# -- the table -----------------------------------------------------------------------------------------------
TOTAL=$(( $(date +%s) - STARTED ))
FAILED=0
{
    COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && COMMIT="$COMMIT + uncommitted changes"
    echo "# pixelwise GPU check ($MODE), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT, ${TOTAL} s"
    echo
    echo "| step | seconds | status | result |"
    echo "| --- | ---: | --- | --- |"
    for i in "${!NAMES[@]}"; do
        echo "| ${NAMES[$i]} | ${SECONDS_TAKEN[$i]} | ${STATUSES[$i]} | ${RESULTS[$i]} |"
        [ "${STATUSES[$i]}" = "FAIL" ] && FAILED=$((FAILED + 1))
    done
    echo
    echo "work folder: $WORK (logs/ holds each step's output)"
} >"$REPORT/gpu_check.md"
tar -czf "$REPORT/gpu_check_logs.tar.gz" -C "$WORK" logs 2>/dev/null
cat "$REPORT/gpu_check.md"
[ "$CLEAN" -eq 1 ] && rm -rf "$WORK"
[ "$FAILED" -eq 0 ]
