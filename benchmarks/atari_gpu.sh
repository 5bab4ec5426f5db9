#!/usr/bin/env bash
# Breakout on a GPU: the runner's Atari defaults (8 envs x 128 steps, Nature CNN, ale-py's C++
# vector env) for 10M agent steps on every installed Keras backend, one after the other, then the
# wall time and the final evaluation (latest and best, 10 whole games each) per backend.
#
#   pip install -e ".[cuda]" && pip install torch    # PyPI's default torch wheel is a CUDA build
#   bash benchmarks/atari_gpu.sh                      # all installed backends, 10M steps each
#   STEPS=2000000 BACKENDS="jax" bash benchmarks/atari_gpu.sh
#
# Target (issue 16): <= 40 min for 10M steps on one H100/H200 on the fastest backend, score >= 400.
# Runs go to ${LOGROOT:-./log/atari_gpu}/<backend>/; a summary JSON to $LOGROOT/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."

ENV_ID=${ENV_ID:-BreakoutNoFrameskip-v4}
STEPS=${STEPS:-10000000}
SEED=${SEED:-1}
LOGROOT=${LOGROOT:-./log/atari_gpu}
if [[ -z "${BACKENDS:-}" ]]; then
  BACKENDS=$(python - <<'EOF'
import importlib.util
print(" ".join(b for b in ("tensorflow", "jax", "torch") if importlib.util.find_spec(b)))
EOF
)
fi

echo "== $(date -u +%FT%TZ) $ENV_ID, $STEPS steps, seed $SEED, backends: $BACKENDS"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
  echo "warning: nvidia-smi not found: this may run on the CPU" >&2
fi
python - "$BACKENDS" <<'EOF'
import os, subprocess, sys
probe = {
    "tensorflow": "import tensorflow as tf; print(tf.config.list_physical_devices('GPU'))",
    "jax": "import jax; print(jax.devices())",
    "torch": "import torch; print('cuda' if torch.cuda.is_available() else 'cpu', torch.version.cuda)",
}
for backend in sys.argv[1].split():
    out = subprocess.run([sys.executable, "-c", probe[backend]], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    print(f"{backend:<10} devices: {(out.stdout or out.stderr).strip().splitlines()[-1]}")
EOF

for backend in $BACKENDS; do
  logdir="$LOGROOT/$backend"
  start=$(date +%s)
  python -m unstable_ppo.run --env_id="$ENV_ID" --backend="$backend" --total_timesteps="$STEPS" \
    --seed="$SEED" --logdir="$logdir" --overwrite --verbose=0
  echo "$backend: $(( $(date +%s) - start )) s wall, process start to final report"
done

python - "$LOGROOT" $BACKENDS <<'EOF'
import json, os, sys
root, rows = sys.argv[1], {}
print(f"{'backend':<11}{'steps':>10}{'train min':>11}{'steps/s':>9}{'eval min':>10}{'latest':>15}{'best':>15}")
for backend in sys.argv[2:]:
    m = json.load(open(os.path.join(root, backend, "metrics.json")))
    rows[backend] = m
    score = lambda r: f"{r['mean_return']:.1f} ± {r['std_return']:.1f}"
    print(f"{backend:<11}{m['total_timesteps']:>10}{m['wall_time_s'] / 60:>11.1f}{m['steps_per_second']:>9.0f}"
          f"{m.get('eval_wall_time_s', 0) / 60:>10.1f}{score(m['latest']):>15}{score(m['best']):>15}")
json.dump(rows, open(os.path.join(root, "summary.json"), "w"), indent=2)
EOF
