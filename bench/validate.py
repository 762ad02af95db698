#!/usr/bin/env python
"""The performance validator: every target of the original plan measured at scale.

    python bench/validate.py [--quick] [--json FILE] [--out DIR]

The measuring lives in ``codegraph_store.perfcheck`` so that the installed
``codegraph perf validate`` runs the same code; this entry point keeps its
stores and run history under ``bench/out/`` (git-ignored). See that module's
docstring for what is built and how each figure is measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DEFAULT_OUT_DIR  # noqa: E402

from codegraph_store import perfcheck  # noqa: E402

if __name__ == "__main__":
    sys.exit(perfcheck.validate(sys.argv[1:], prog="python bench/validate.py", out_dir=DEFAULT_OUT_DIR))
