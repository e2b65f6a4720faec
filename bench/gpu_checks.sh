#!/usr/bin/env bash
# The checks that need a real NVIDIA GPU, in one go: the GPU tests and the CUDA rows of bench/RESULTS.md.
#
#   bash bench/gpu_checks.sh [LOG_DIR]          (from the repository root; ../shared/data must exist)
#
# 1. The test files that exercise the CUDA paths, with numba.cuda on the real device
#    (NUMBA_ENABLE_CUDASIM=0): the tests marked `gpu` and every simulator-sized CUDA test.
# 2. bench/bench_scattering.py on 2cex (small protein) and 3j6r (1 M-atom capsid): CPU and GPU rows on
#    the same machine.
# 3. bench/bench_generate.py on the square detector, CPU and CUDA.
# 4. `spi bench` (classifier inference) on CPU and CUDA.
# 5. bench/bench_stream.py: `spi stream`'s sustained rate and latency, CPU and GPU rows (issue 18's GPU targets).
# Each step writes LOG_DIR/<step>.log (default: gpu-checks/); a failing step is reported and the next runs.
# SKIP="step1 step2" leaves steps out; PYTEST_ARGS adds pytest arguments, split at spaces (e.g.
# "--deselect tests/test_generate.py::test_other_compressions_and_adu_output"); PYTHON names the interpreter
# (default python3, e.g. PYTHON=.venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu-checks}
mkdir -p "$LOG"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
status=0

step() {  # step NAME COMMAND...: run, log, report
    local name=$1
    shift
    if [[ " ${SKIP:-} " == *" $name "* ]]; then
        echo "skip  $name"
        return
    fi
    local t0=$SECONDS
    if "$@" >"$LOG/$name.log" 2>&1; then
        echo "ok    $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL  $name ($((SECONDS - t0)) s): see $LOG/$name.log"
        tail -20 "$LOG/$name.log"
        status=1
    fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$LOG/gpu.txt" 2>&1
$PY -c "import numba, numpy, torch; print('numba', numba.__version__, 'numpy', numpy.__version__, 'torch',
torch.__version__, 'cuda', torch.version.cuda)" >>"$LOG/gpu.txt" 2>&1
cat "$LOG/gpu.txt"

# shellcheck disable=SC2086
NUMBA_ENABLE_CUDASIM=0 step tests_gpu $PY -m pytest -q -p no:cacheprovider -o addopts="-ra" ${PYTEST_ARGS:-} \
    tests/test_scattering.py tests/test_volume.py tests/test_generate.py tests/test_cli_simulate.py
step bench_scattering_2cex $PY bench/bench_scattering.py --repeats 3
step bench_scattering_3j6r $PY bench/bench_scattering.py --structure ../shared/data/structures/3j6r.pdb.gz \
    --exact-pixels 4096 --cuda-pixels 65536 --q-max 0.1 --energy 1600
step bench_generate_cpu $PY bench/bench_generate.py --shots 64 --detector square --workers 1 --device cpu
step bench_generate_cuda $PY bench/bench_generate.py --shots 64 --detector square --workers 1 --device cuda
step spi_bench $PY -m cli bench --default --runtime torch --device all --batch-sizes 1,32,256 --threads 1 \
    --repeats 3 --min-seconds 0.5
step bench_stream $PY bench/bench_stream.py --seconds 3 --json "$LOG/stream.json"

for f in "$LOG"/bench_*.log "$LOG"/spi_bench.log; do
    [ -f "$f" ] || continue
    echo "== $f"
    grep -v "^\s*$" "$f" | tail -25
done
grep -E "passed|failed" "$LOG/tests_gpu.log" | tail -3
exit $status
