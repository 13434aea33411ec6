#!/usr/bin/env python3
"""The migration guide's comparison: photos through RMBG-2.0 and U2-Net, side by side.

    python scripts/benchmark_comparison.py [FOLDER] [--count 5] [--ground-truth DIR]
                                           [--out test_results/benchmark_comparison]
                                           [--require-rmbg]

FOLDER defaults to ../shared/images (beside the checkout). Writes, per photo, an
original | RMBG-2.0 | U2-Net image, a grid of all of them, and statistics.md/.json: each
photo's and the mean time per model and the two models' agreement; with ground-truth masks
(same file stems) also each model's MAE, IoU and maximum F-measure. Without RMBG-2.0
weights it says why and compares nothing but U2-Net's figures (exit 0; 1 with
--require-rmbg). The code is `bgremove.compare.comparison`.
"""

import sys

from bgremove.compare import comparison

if __name__ == "__main__":
    sys.exit(comparison())
