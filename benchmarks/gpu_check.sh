#!/usr/bin/env bash
# For the day a GPU is lent: everything that needs a real NVIDIA GPU, in one go, in under 8 minutes.
#
#   pip install -e ".[test]" "jax[cuda12]==0.10.2" [torch with CUDA]
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default benchmarks/results/gpu_check
#
# Stages, each under its own time limit, each recorded in OUT_DIR/gpu_check.json as soon as it ends
# (stage -> exit code, seconds, log file), so a check cut short keeps what it did:
#   1. tests that run the nets on the default device, on CUDA (layers, masks, losses, models, steps,
#      inference; not the ones written for 8 CPU devices);
#   2. the quickstart (configs/quickstart.py) for 300 steps with one evaluation;
#   3. the benchmark rows: FCN-8s at 500x500, float32 and bfloat16, batch 1-16, fcn_jax against PyTorch
#      eager and best (benchmarks/train_step.py --torch, when torch sees the GPU; fcn_jax alone if not).
# Without a GPU it says so in one line and exits 3, having run nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu_check}"
SUMMARY="$OUT/gpu_check.json"
PY="${PYTHON:-python}"

if ! JAX_PLATFORMS=cuda "$PY" -c "import jax; jax.devices('gpu')" >/dev/null 2>&1; then
  echo "gpu_check: no GPU found (JAX_PLATFORMS=cuda gives no device; needs an NVIDIA GPU and jax[cuda12]); nothing run." >&2
  exit 3
fi
mkdir -p "$OUT"
export JAX_PLATFORMS=cuda

record() {  # record STAGE EXIT_CODE SECONDS LOG: merges one stage into the summary JSON.
  "$PY" - "$SUMMARY" "$@" <<'EOF'
import json, os, sys, time
path, stage, code, seconds, log = sys.argv[1:]
summary = json.load(open(path)) if os.path.exists(path) else {"stages": {}}
summary["stages"][stage] = {"exit_code": int(code), "seconds": int(seconds), "log": log,
                            "timed_out": int(code) == 124}
summary["updated"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
json.dump(summary, open(path, "w"), indent=1)
EOF
}

stage() {  # stage NAME LIMIT_SECONDS COMMAND...: runs it with a time limit, logs it, records it.
  local name="$1" limit="$2"; shift 2
  local log="$OUT/$name.log" start=$SECONDS
  echo "gpu_check: $name (at most ${limit} s) ..."
  timeout "$limit" "$@" >"$log" 2>&1
  local code=$?
  record "$name" "$code" "$((SECONDS - start))" "$log"
  echo "gpu_check: $name: exit $code in $((SECONDS - start)) s (log $log)"
}

"$PY" - "$SUMMARY" <<'EOF'
import json, os, sys, time
import jax
device = jax.devices()[0]
json.dump({"device": device.device_kind, "devices": jax.device_count(), "jax": jax.__version__,
           "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "load_average": os.getloadavg(), "stages": {}}, open(sys.argv[1], "w"), indent=1)
print(f"gpu_check: {jax.device_count()} x {device.device_kind}, jax {jax.__version__}")
EOF

stage tests 150 "$PY" -m pytest -q -p no:cacheprovider \
  tests/layers_test.py tests/masked_test.py tests/depthwise_upsampling_test.py tests/losses_test.py \
  tests/models_test.py tests/bucketed_steps_test.py tests/inference_test.py tests/tta_test.py \
  --junitxml="$OUT/tests.xml"

stage quickstart 120 "$PY" -m fcn_jax.main --config configs/quickstart.py --workdir "$OUT/quickstart" \
  --config.num_train_steps=300 --config.eval_every_steps=300 --config.checkpoint.every_steps=300

TORCH=()
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  TORCH=(--torch)
else
  echo "gpu_check: torch does not see the GPU: fcn_jax rows only (no PyTorch columns)."
fi
stage benchmark 180 "$PY" benchmarks/train_step.py --models fcn8s --sizes 500 --dtypes float32,bfloat16 \
  --batch-sizes 1,2,4,8,16 --repeats 3 --min-repeat-seconds 0.5 "${TORCH[@]}" --output "$OUT/train_step.json"

echo "gpu_check: done; summary $SUMMARY"
