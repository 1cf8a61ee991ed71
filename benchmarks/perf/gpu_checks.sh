#!/usr/bin/env bash
# Every GPU check the issues name, in one short run (a few minutes on one H100/H200), for a
# session that is lent a GPU machine with PyTorch installed but without this package:
#
#   bash benchmarks/perf/gpu_checks.sh 2>&1 | tee gpu_checks.log
#
# 1. issue 4: batched classifier annotation vs the per-image loop on CUDA (target ≥ 10×), for the
#    CPU-preset classifier on 16 px digits and for the paper's 19.6 M classifier at 32 px;
# 2. issue 5: CIFAR-10 DDPM++ training throughput in fp32, bf16 and bf16 + compile (one process,
#    then DistributedDataParallel over all GPUs when there are several);
# 3. issue 18: EDM2-XS training and sampling throughput on ImageNet-512 latents (img/s), for plan's
#    compute-estimate table;
# 3b. issue 27: DDPM++ CIFAR-10 (32 px, fp32) and EDM2-XS (latents 4×64×64, bf16) training img/s and sampling
#    img/s (fp32, as the harness samples; EDM2 unguided and guided), printed as throughput.yaml entries with
#    date and device (about 3 minutes on an H100; `--tiny` checks the script on a CPU);
# 4. a CUDA training run through the harness (benchmarks/smoke_cpu.yaml on the GPU), when
#    torch-fidelity is importable (its metric needs it).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
step() { echo; echo "== $*"; "$@" || { echo "!! failed (exit $?): $*"; status=1; }; }

step nvidia-smi -L
step "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step "$PY" benchmarks/perf/annotate.py --device cuda --images 64 --num-sigmas 128
step "$PY" benchmarks/perf/annotate.py --device cuda --preset paper_cifar --resolution 32 --images 4 \
    --num-sigmas 32 --repeats 3
step "$PY" benchmarks/perf/train_step.py --gpu-only
gpus=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "${gpus:-0}" -gt 1 ]; then
    step "$PY" -m torch.distributed.run --nproc_per_node="$gpus" benchmarks/perf/train_step.py --gpu-only
else
    echo; echo "== one GPU: DistributedDataParallel throughput not measured"
fi
step "$PY" benchmarks/perf/edm2_throughput.py --preset xs --batch 64
step "$PY" benchmarks/perf/throughput_entries.py   # prints throughput.yaml entries: paste them into the file
if "$PY" -c "import torch_fidelity" 2>/dev/null; then
    step "$PY" -m ambient_bench run benchmarks/smoke_cpu.yaml
else
    echo; echo "== torch-fidelity not installed: harness run skipped (carry its wheel: see the device tool's README)"
fi
exit $status
