#!/usr/bin/env bash
# The GPU benchmarks in one script, for a lent GPU machine with no network whose python3 already holds
# torch with CUDA (docs/benchmarks.md, "GPU"). Results and logs go to $OUT (default ./gpu-out).
#
#   bash benchmarks/gpu_session.sh smoke   # every method on qwen3-tiny-random (~2 min); builds the 4B model
#   bash benchmarks/gpu_session.sh main    # qwen3-4b-random, then qwen3-0.6b-random as time allows
#   bash benchmarks/gpu_session.sh job     # the README's job once on qwen3-4b-random (~6 min): doctor, train
#                                          # under a 24 GiB cap, merge, reload, greedy chat, vLLM + openai
#   bash benchmarks/gpu_session.sh grpo-vllm  # GRPO rollouts through `lorakit serve --engine vllm` (runtime
#                                          # LoRA, train.generation_server) on qwen3-0.6b-random, ~5 min: a few
#                                          # steps, then the same steps in process; needs vLLM (.venv-vllm)
#
# It expects three ignored folders beside the code, prepared on a machine with network:
#   .whl/      wheels of the Python packages the GPU image lacks or has in other versions (pip download
#              --python-version 3.12 --only-binary=:all: transformers==5.24.0 peft trl datasets pydantic ...)
#   .devsite/  packages unpacked as they are (bitsandbytes, with only its CUDA 13 library, to fit the carry)
#   .devcache/tokenizers/qwen3   the Qwen3 tokenizer lorakit built from qwen.tiktoken
set -u
stage=${1:-smoke}
budget=${2:-540}  # seconds this stage may take in all
start=$(date +%s)
left() { echo $((budget - ($(date +%s) - start))); }
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

DEV=${DEV:-cuda}  # DEV=cpu SKIP_INSTALL=1 tries the script's flow on a machine without a GPU
SITE=/tmp/lk-site
if [ -z "${SKIP_INSTALL:-}" ] && [ ! -f "$SITE/.done" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  cp -r .devsite/. "$SITE/" && touch "$SITE/.done"
fi
export PYTHONPATH="$SITE:$PWD/src"
export LORAKIT_CACHE=/tmp/lk-cache  # outside the repo: a carried folder would replace built models
mkdir -p "$LORAKIT_CACHE/tokenizers"
[ -d "$LORAKIT_CACHE/tokenizers/qwen3" ] || cp -r .devcache/tokenizers/qwen3 "$LORAKIT_CACHE/tokenizers/"

build() {  # materialise built-in models (random weights streamed to disk), in the background
  python3 -c "import sys; from lorakit.models import resolve_model; [print(resolve_model(m), flush=True) for m in sys.argv[1:]]" "$@"
}

bench() {  # bench NAME SECONDS ARGS...: one train_speed.py run, cut off after SECONDS
  local name=$1 secs=$2; shift 2
  if [ "$secs" -lt 60 ]; then echo "== $name: skipped, $secs s left"; return; fi
  echo "== $name ($secs s at most): train_speed.py $*"
  timeout "$secs" python3 benchmarks/train_speed.py --device "$DEV" --threads 8 --out "$OUT/$name" "$@" 2>&1 \
    | grep --line-buffered -v "Warning\|warn(" | tee "$OUT/$name.log"
  pkill -f "train_speed.py --child" || true  # timeout stops the parent only
}

step() {  # step NAME SECONDS CMD...: one command of the job, cut off after SECONDS or at the stage's budget;
  local name=$1 secs=$2; shift 2  # a failure is noted, not fatal
  [ "$secs" -le "$(left)" ] || secs=$(left)
  if [ "$secs" -lt 20 ]; then echo "== job: $name skipped, stage budget spent"; FAILED="$FAILED $name"; return; fi
  echo "== job: $name ($secs s at most)"
  local t0; t0=$(date +%s)
  timeout "$secs" "$@" 2>&1 | grep --line-buffered -v "Warning\|warn(" | tee "$OUT/job-$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== job: $name exit $rc in $(( $(date +%s) - t0 )) s"
  [ "$rc" = 0 ] || FAILED="$FAILED $name"
}

job() {  # the README's job on qwen3-4b-random (JOB_MODEL=qwen3-tiny-random DEV=cpu tries the flow on a CPU)
  local model=${JOB_MODEL:-qwen3-4b-random} w=$OUT/job cfg=configs/qwen3-4b-huanhuan.yaml
  FAILED=""
  rm -rf "$w" && mkdir -p "$w"
  build "$model" | tail -1
  python3 benchmarks/make_huanhuan_like.py --out "$w/all.json" --n 160 >/dev/null
  local set=(model.name="$model" data.path="$w/all.json" train.output_dir="$w/run" train.max_steps="${JOB_STEPS:-6}"
             train.save_steps="${JOB_STEPS:-6}" "tracking.backends=[]" train.device="$DEV")
  step doctor-24gb 180 python3 -m lorakit doctor "$cfg" "${set[@]}" --gpu-memory 24
  step doctor 180 python3 -m lorakit doctor "$cfg" "${set[@]}"
  # trained as on a 24 GiB card: the allocator refuses past 23.5 GiB; the peak goes beside doctor's estimate
  step train 300 python3 benchmarks/job_check.py --cap-gib 23.5 "$cfg" "${set[@]}"
  step merge 300 python3 -m lorakit merge "$w/run" --out "$w/merged"
  step chat 180 python3 -m lorakit chat --model "$w/merged" --prompt "你是谁？" --temperature 0 --max-new-tokens 24
  local vllm; vllm=$(command -v vllm || ls .venv-vllm/bin/vllm 2>/dev/null)
  if [ -z "$vllm" ] || [ "$DEV" != cuda ]; then
    echo "== job: vLLM is not installed here (or no GPU): serve --engine vllm and the openai client skipped"
  else
    PATH="$(dirname "$vllm"):$PATH" python3 -m lorakit serve --engine vllm --model "$w/merged" \
      --served-model-name job --port 8011 --max-model-len 2048 > "$OUT/job-vllm.log" 2>&1 &
    local server=$!
    # vLLM's own environment has the openai client (a vLLM dependency)
    step openai 300 "$(dirname "$vllm")/python" benchmarks/job_check.py --openai http://127.0.0.1:8011/v1
    pkill -P "$server" || true  # lorakit serve runs vllm serve as its child
    kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
  fi
  echo "job: ${FAILED:-every step passed}"
}

grpo_vllm() {  # GRPO whose rollouts go through vLLM as a server (docs/grpo.md, "Generation on a GPU")
  local model=${GRPO_MODEL:-qwen3-0.6b-random} w=$OUT/grpo-vllm port=8012
  FAILED=""
  rm -rf "$w" && mkdir -p "$w"
  local dir; dir=$(build "$model" | tail -1)
  local vllm; vllm=$(command -v vllm || ls .venv-vllm/bin/vllm 2>/dev/null)
  if [ -z "$vllm" ] || [ "$DEV" != cuda ]; then
    echo "== grpo-vllm: vLLM is not installed here (or no GPU): skipped"; return
  fi
  # the command lorakit would run, plus a memory share that leaves the rest of the GPU to the trainer
  local cmd; cmd=$(python3 -m lorakit serve --engine vllm --model "$dir" --served-model-name base --port $port \
    --max-model-len 1024 --allow-runtime-lora --max-lora-rank 16 --print-command) || { echo "print-command failed"; return; }
  echo "== grpo-vllm: $cmd --gpu-memory-utilization 0.35"
  (PATH="$(dirname "$vllm"):$PATH" eval "$cmd --gpu-memory-utilization 0.35" > "$OUT/grpo-vllm-server.log" 2>&1) &
  local server=$! waited=0
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do
    sleep 5; waited=$((waited + 5))
    if [ $waited -ge 300 ] || ! kill -0 $server 2>/dev/null; then
      echo "== grpo-vllm: the server did not come up"; tail -20 "$OUT/grpo-vllm-server.log"; return
    fi
  done
  local set=(model.name="$dir" train.max_steps="${GRPO_STEPS:-4}" train.save_steps=2 train.eval_steps=100
             train.device="$DEV" train.threads=8 "tracking.backends=[]")
  step grpo-server 400 python3 -m lorakit train configs/demo-grpo.yaml "${set[@]}" train.output_dir="$w/server" \
    train.generation_server=http://127.0.0.1:$port
  pkill -P $server || true
  kill $server 2>/dev/null; wait $server 2>/dev/null
  step grpo-in-process 400 python3 -m lorakit train configs/demo-grpo.yaml "${set[@]}" train.output_dir="$w/local"
  python3 - "$w" <<'PY'
import json, sys
from pathlib import Path
for run in ("server", "local"):
    rows = [json.loads(x) for x in (Path(sys.argv[1]) / run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    print(run, [(r["step"], round(r["reward"], 3), round(r["time/generation_s"], 2)) for r in steps])
PY
  echo "grpo-vllm: ${FAILED:-every step passed}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader || true
python3 - <<'EOF'
import importlib
for m in ["torch", "transformers", "peft", "trl", "datasets", "accelerate", "bitsandbytes", "pyarrow", "pydantic"]:
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), flush=True)
    except Exception as e:
        print(m, "FAILED:", type(e).__name__, str(e)[:200], flush=True)
import torch
if torch.cuda.is_available():
    print("cuda", torch.version.cuda, torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
EOF

case "$stage" in
  smoke)
    build qwen3-tiny-random
    build qwen3-4b-random qwen3-0.6b-random > "$OUT/build.log" 2>&1 &
    bench smoke-tiny "$(left)" --model qwen3-tiny-random --rounds 1 --steps 3 --samples 64 --eval-samples 8 \
      --methods a,b,c,c_low,c_mb4
    wait
    tail -3 "$OUT/build.log"
    ;;
  main)
    build qwen3-4b-random qwen3-0.6b-random 2>&1 | tail -2
    bench qwen3-4b "$(( $(left) - 120 ))" --model qwen3-4b-random --rounds 2 --steps 8 --samples 512 \
      --eval-samples 32 --methods a,b,c,c_low
    bench qwen3-4b-lever "$(( $(left) - 60 ))" --model qwen3-4b-random --rounds 1 --steps 8 --samples 512 \
      --eval-samples 8 --methods c_mb4
    bench qwen3-0.6b "$(left)" --model qwen3-0.6b-random --rounds 1 --steps 8 --samples 512 --eval-samples 32 \
      --methods a,b,c,c_low
    ;;
  job)
    job
    ;;
  grpo-vllm)
    grpo_vllm
    ;;
esac
echo "stage $stage done in $(( $(date +%s) - start )) s"
