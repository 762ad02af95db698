#!/usr/bin/env python
"""Cost of the performance monitor on get_node: monitoring off vs on, same run.

    python bench/monitor_overhead.py [--calls N] [--json FILE]

Two read-only Stores on the validator's quick store (built under bench/out/ by
``bench/validate.py --quick`` if missing): the default config, and the same with
``[performance_targets] enable_monitoring = true``. Both call get_node on the
same random ids, interleaved in rotating blocks; the verdict compares medians
(goal: on/off <= 1.05). With monitoring off the Store has no wrapper at all,
which the script also checks. Beside them: the cost of the two clock reads any
timing wrapper needs, the floor of the overhead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DEFAULT_OUT_DIR, Row, Verdict, gc_frozen, interleave, print_header,  # noqa: E402
                     print_table, print_verdicts, write_json)

from codegraph_store import Store, perfcheck  # noqa: E402

GOAL = 1.05


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200_000, help="get_node calls per contender")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    print_header("monitor overhead on get_node")
    path, info = perfcheck.build_store(DEFAULT_OUT_DIR, perfcheck.SCALES["quick"])
    ids = perfcheck.sample_ids(path, args.calls, perfcheck.SEED)
    off = Store.open(path, readonly=True)
    on = Store.open(path, readonly=True, config={"performance_targets": {"enable_monitoring": True}})
    assert "get_node" not in vars(off) and off.monitor is None
    with gc_frozen():
        samples = interleave({"off": off.get_node, "on": on.get_node}, ids, block=2000,
                             warmup=ids[:2000])
        # The floor of any wrapper that times a call: two clock reads, against a call
        # that does nothing, on the same interleaving.
        clock = time.perf_counter_ns
        floor = interleave({"empty": lambda i: None, "clocks": lambda i: (clock(), clock())},
                           ids, block=2000, warmup=ids[:2000])
    recorded = on.monitor.histograms["get_node"].count
    off.close()
    on.close()
    p50_off, p50_on = samples["off"].p50("us"), samples["on"].p50("us")
    rows = [Row.latency("get_node p50, monitoring on (baseline: off)", p50_on, p50_off),
            Row.latency("get_node mean, monitoring on (baseline: off)", samples["on"].mean("us"),
                        samples["off"].mean("us")),
            Row.latency("two perf_counter_ns reads (baseline: an empty call)",
                        floor["clocks"].p50("us"), floor["empty"].p50("us"))]
    print_table(rows)
    print(f"store: {path.name}, {info['nodes']:,} nodes; {args.calls:,} calls each; "
          f"the monitor recorded {recorded:,}")
    ratio = p50_on / p50_off
    clocks = floor["clocks"].p50("us") - floor["empty"].p50("us")
    print(f"of the {p50_on - p50_off:+.2f} us per call, two clock reads cost {clocks:.2f} us"
          f" ({clocks / p50_off:.1%} of get_node with monitoring off)")
    print_verdicts([Verdict(f"monitoring on costs <= {GOAL - 1:.0%} on get_node (p50)", ratio <= GOAL,
                            f"{ratio:.3f}x ({p50_on - p50_off:+.2f} us per call)")])
    if args.json:
        write_json(args.json, rows)
    return 0 if ratio <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
