#!/usr/bin/env bash
# Every GPU figure of benchmarks/README.md in one call of a lent GPU machine (under 10 minutes on an
# H200): the correctness checks and attention kernels, training against the minimal loop at batch 16
# and 64 (compiled, bf16) and gpt2-xl (eager), greedy decoding against transformers' static cache.
# Each part has its own time limit, so a slow one cannot take the rest with it; logs go to $OUT.
#
#     OUT=gpu_out bash benchmarks/gpu_run.sh
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
part() {  # part NAME SECONDS COMMAND...: run COMMAND for at most SECONDS, its output to the terminal and $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "=== $name ($(date +%T), limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -i -E "warn|^\s*$" | tee "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-100
part check 60 python3 benchmarks/gpu_check.py
if grep -q "attention_kernels) *failed" "$OUT/check.log"; then  # cuDNN attention broke here: keep PyTorch's order
    export GPT2LAB_CUDNN_ATTENTION=0
    echo "cuDNN attention failed in the check: GPT2LAB_CUDNN_ATTENTION=0 for the rest"
fi
part train16 150 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 16 --only gpt2lab gpt2lab-chunked minimal --profile --deadline 100
part decode 170 python3 benchmarks/bench_generate.py --device cuda --dtype bf16 --compile --batch-sizes 1 8 \
    --new-tokens 128 --repeats 2 --profile
part train64 115 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 64 --only gpt2lab minimal
part xl 100 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --preset gpt2-xl --seq-len 1024 --batch-size 8 \
    --only gpt2lab minimal --rounds 2 --steps 2
echo "=== done $(date +%T)"
