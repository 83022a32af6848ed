#!/usr/bin/env bash
# The evaluator's GPU checks in one go (run on a machine where CUDA is visible, from the
# repository root): the CUDA tests against CPU results, then the CUDA benchmark cases
# (evaluate on the GPU vs a device-resident sketch, torchmetrics when installed, and a
# per-query loop), printed as one table of ratios; then a grid of runs sharing the GPU
# (--jobs auto against --jobs 1: wall times and the largest metric difference).
set -euo pipefail
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.__version__, torch.cuda.get_device_name(0))"
python -m pytest -q -p no:cacheprovider -m cuda tests/
python -m pytest -q -p no:cacheprovider benchmarks/bench_evaluation.py -k "cuda_against_sketch" --benchmark-enable
# Several runs sharing the device: --jobs auto (bounded by the GPU's free memory) against --jobs 1
python benchmarks/gpu_jobs_check.py
