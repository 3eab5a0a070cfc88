#!/usr/bin/env bash
# The GPU measurements still owed (issues 9 and 12), cut into device calls of under 10 minutes each.
# On the lent GPU, after staging the wheels (shared/gpu/README.md), one call per part, made back to back
# (a held machine goes back 30 s after a call ends; read the results after the last call):
#     bash bench/gpu_calls.sh fit        # #9 memory-fit: 3B QLoRA ftnb, 1.5B ftnb + shared             (~460 s)
#     bash bench/gpu_calls.sh shared0    # #9 1.5B --shared, rep 0 (then shared1, shared2)              (~330 s each)
#     bash bench/gpu_calls.sh sft        # #12 1.5B fused ways, mixed and equal, one rep               (~420 s)
#     bash bench/gpu_calls.sh more       # #9 3B QLoRA TRL (fit); #12 8-bit optimizers, packed attention (~560 s)
# Everything lands under $OUT (JSON and logs), to be committed to bench/results/.
set -u
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
run() { local t=$1; shift; timeout "$t" "$@"; echo "[$(date +%T)] rc=$? $*"; }
case "${1:-}" in
  fit)
    run 200 python3 bench/grpo.py --sizes 3b --fit ftnb_qlora --run-timeout 190 --out $OUT/grpo_fit_3b_qlora.json > $OUT/fit3.log 2>&1
    run 260 python3 bench/grpo.py --sizes 1.5b --fit ftnb_shared,ftnb --run-timeout 125 --out $OUT/grpo_fit_1.5b.json > $OUT/fit15.log 2>&1 ;;
  shared[0-9])
    run 560 python3 bench/grpo.py --sizes 1.5b --shared --pairs 1 --first-rep "${1#shared}" --budget 60 --run-timeout 180 \
        --out $OUT/grpo_shared_1.5b_r${1#shared}.json > $OUT/shared.log 2>&1 ;;
  sft)
    run 560 python3 bench/sft.py --sizes 1.5b --seqs 1024 --batches mixed,equal --ways trl,ftnb_liger,ftnb_fused_liger,ftnb_fused \
        --reps 1 --steps 14 --warmup 4 --budget 520 --out $OUT/sft_fused.json > $OUT/sft.log 2>&1 ;;
  more)
    run 170 python3 bench/grpo.py --sizes 3b --fit trl_qlora --run-timeout 160 --out $OUT/grpo_fit_3b_trl_qlora.json > $OUT/fit3trl.log 2>&1
    run 170 python3 -m pytest -m gpu tests/gpu/test_optim_gpu.py -rP -q -o addopts="" -p no:cacheprovider > $OUT/optim.log 2>&1
    run 220 python3 bench/attention.py --size 1.5b --batches mixed,equal --out $OUT/attention.json > $OUT/attention.log 2>&1 ;;
  *) echo "usage: bash bench/gpu_calls.sh fit|shared0|shared1|shared2|sft|more"; exit 2 ;;
esac
tail -n 3 $OUT/*.log | cut -c1-400
