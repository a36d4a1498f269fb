#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one call of a lent GPU machine (each part has its own time
# limit, so a slow one cannot take the rest with it; logs go to $OUT):
#   check    correctness on the GPU (gpu_check.py: fused attention, KV cache, chunked loss, the CUDA-graph
#            decode step and train --cuda-graph against the plain ones) and the attention kernels
#   train16  training against the minimal loop, compiled, bf16, batch 16 x 1024 (gpt2lab, --cuda-graph,
#            the minimal loop), with profiles
#   train64  the same at batch 64 (gpt2lab, --cuda-graph, the minimal loop)
#   xl       gpt2-xl, eager, batch 8 (gpt2lab, the minimal loop)
#   variants batch 16 again, against the minimal loop: --chunked-loss alone and with --cuda-graph, and the
#            weights stored in nn.Linear's order rather than Conv1D's (gpt2lab-contiguous)
#   eager16  batch 16 without compiling: gpt2lab plain and --cuda-graph (which removes the launches an eager
#            step is bound by, with no compilation wait) against the minimal loop, eager too
#   autotune batch 16 against the minimal loop with gpt2lab's step compiled by Inductor's max-autotune (minutes
#            of compilation: a call of its own)
#   decode   greedy decoding against transformers' static cache, compiled and eager, with profiles
#   loop     the whole training loop (train(): logging every step) against the step alone, plain and --cuda-graph
# PARTS picks some (default: check train16 train64 xl, about 9.7 minutes of limits on an H200: a command may run
# 10; the others are for later calls, in this order of use: variants, eager16, autotune, loop, decode).
#
#     OUT=gpu_out bash benchmarks/gpu_run.sh
#     OUT=gpu_out PARTS="variants loop" bash benchmarks/gpu_run.sh
set -u
OUT=${OUT:-gpu_out}
PARTS=${PARTS:-check train16 train64 xl}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
part() {  # part NAME SECONDS COMMAND...: run COMMAND for at most SECONDS (if NAME is in PARTS), output to the terminal and $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    case " $PARTS " in *" $name "*) ;; *) return ;; esac
    echo "=== $name ($(date +%T), limit ${limit} s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v -i -E "warn|^\s*$" | tee "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-100
part check 160 python3 benchmarks/gpu_check.py
if grep -q "attention_kernels) *failed" "$OUT/check.log" 2>/dev/null; then  # cuDNN attention broke here: keep PyTorch's order
    export GPT2LAB_CUDNN_ATTENTION=0
    echo "cuDNN attention failed in the check: GPT2LAB_CUDNN_ATTENTION=0 for the rest"
fi
part train16 180 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 16 --only gpt2lab gpt2lab-graphed minimal --profile --deadline 120
part train64 140 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 64 --only gpt2lab gpt2lab-graphed minimal
part xl 100 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --preset gpt2-xl --seq-len 1024 --batch-size 8 \
    --only gpt2lab minimal --rounds 2 --steps 2
part variants 170 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 16 --only minimal gpt2lab-chunked gpt2lab-graphed-chunked gpt2lab-contiguous --deadline 120
part eager16 90 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --preset gpt2 --seq-len 1024 \
    --batch-size 16 --only gpt2lab gpt2lab-graphed minimal
part autotune 420 python3 benchmarks/bench_train.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 16 --only minimal gpt2lab-autotune
part decode 170 python3 benchmarks/bench_generate.py --device cuda --dtype bf16 --compile --batch-sizes 1 8 \
    --new-tokens 128 --repeats 2 --profile
part loop 200 python3 benchmarks/bench_train_loop.py --device cuda --dtype bf16 --compile --preset gpt2 --seq-len 1024 \
    --batch-size 16 --cuda-graph
echo "=== done $(date +%T); the lines that decide, from every part's log:"
grep -H -i -E "ratio|FAIL|NOT recorded|left out|recorded as a CUDA graph" "$OUT"/*.log 2>/dev/null | sed "s|^$OUT/||"
