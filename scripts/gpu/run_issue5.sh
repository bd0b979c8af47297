#!/usr/bin/env bash
# Issue 5's GPU measurements in a few device calls, with the binaries of build_devbin.sh carried
# in `.devbin/`. Each phase writes its log to $OUT (or ./gpu-out) and stays under the limit given.
#
#   scripts/gpu/run_issue5.sh tests   # CUDA kernel tests (~150 s on an H100)
#   scripts/gpu/run_issue5.sh sweep   # Flash (f16/bf16, 4 shapes) under each tensor-core tiling (~2 min)
#   scripts/gpu/run_issue5.sh table   # Flash / Burn / Reference table, memory at N = 4096, PyTorch (~5 min)
#   scripts/gpu/run_issue5.sh all     # the three in turn (over one 600 s device call: use phases)
#
# `sweep` sets VITQ_FLASH_MMA (`warps,keys[,fast]`, see vitq_attention::kernel::MmaTiling) per
# run; each row of `bench quick` also prints Flash's relative error against Reference, so a
# tiling that computes wrong numbers shows there.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
phase="${1:-all}"

cd .devbin || { echo "no .devbin: run scripts/gpu/build_devbin.sh here and carry .devbin" >&2; exit 1; }
for f in flash unit bench; do [ -f "$f.xz" ] && xz -d -f "$f.xz"; done
chmod +x flash unit bench
# NVRTC and libcuda: where the GPU machine's CUDA keeps them.
for dir in /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
    [ -d "$dir" ] && export LD_LIBRARY_PATH="$dir:${LD_LIBRARY_PATH:-}"
done
log() { echo "== $* ($(date +%T))"; }
{
    log "commit $(cat commit 2>/dev/null), phase $phase"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1
} | tee "$out/device.txt"

tests() {
    log "kernel unit tests" ; timeout 60 ./unit 2>&1
    log "CUDA kernel tests"; timeout 300 ./flash --test-threads 1 --nocapture 2>&1
}
sweep() {
    for t in "" "8,64" "4,32" "8,32" "2,64" "4,128" "4,64,fast" "8,64,fast"; do
        log "VITQ_FLASH_MMA=${t:-default (4,64)}"
        VITQ_FLASH_MMA="$t" timeout 60 ./bench quick 2>&1
    done
}
table() {
    log "table (burn with CUBECL_AUTOTUNE_LEVEL=minimal)"
    CUBECL_AUTOTUNE_LEVEL=minimal timeout 240 ./bench 2>&1
    for s in flash reference burn; do log "mem $s 4096"; timeout 40 ./bench mem "$s" 4096 2>&1; done
    log "torch"; timeout 120 python3 ../scripts/bench/attention_torch.py 2>&1
    timeout 40 python3 ../scripts/bench/attention_torch.py --mem 4096 2>&1
}
case "$phase" in
    tests) tests | tee "$out/tests.txt" ;;
    sweep) sweep | tee "$out/sweep.txt" ;;
    table) table | tee "$out/table.txt" ;;
    all) tests | tee "$out/tests.txt"; sweep | tee "$out/sweep.txt"; table | tee "$out/table.txt" ;;
    *) echo "phase: tests | sweep | table | all" >&2; exit 2 ;;
esac
