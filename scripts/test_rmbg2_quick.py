#!/usr/bin/env python3
"""The migration guide's quick test: load RMBG-2.0, cut one photo out, print the figures.

    python scripts/test_rmbg2_quick.py [PHOTO] [--out test_results] [--require-rmbg]

Loads the configured RMBG-2.0 (BG_REMOVAL_RMBG_PATH, the hub with HF_TOKEN, or .env) and
U2-Net as the service does, saves each cut-out under test_results/ and prints the time,
the share of foreground and of soft edge, and how far the two models agree. Without
RMBG-2.0 weights it says why in one line and goes on with U2-Net (exit 0; 1 with
--require-rmbg). The code is `bgremove.compare.quick_test`.
"""

import sys

from bgremove.compare import quick_test

if __name__ == "__main__":
    sys.exit(quick_test())
