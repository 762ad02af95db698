"""Metadata codec benchmark: is a zstd dictionary worth it for small records?

    python bench/codec.py [--quick] [--json FILE] [--db FILE] [--dict-size BYTES]

Takes the metadata records of an indexed store (default: indexes the standard
library, or the ``json``/``email``/``asyncio`` packages with ``--quick``), and
for the records below ``compression_threshold`` compares, in one run: stored as
plain JSON (what the codec does), zstd per record without a dictionary, and
zstd per record with a dictionary trained on a sample of the same records.
Reports bytes, the ratio against plain JSON, and encode/decode time per record.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import sysconfig
import tempfile
import time

import zstandard
from _common import Row, print_header, print_table, write_json

from codegraph_store import Config, Store, codec
from codegraph_store.indexer import index_tree


def records_from(db: str) -> list[bytes]:
    with Store.open(db, readonly=True) as store:
        conn, _ = store._read_conn()
        return [json.dumps(codec.decode(b), ensure_ascii=False, separators=(",", ":")).encode()
                for (b,) in conn.execute("SELECT metadata FROM nodes WHERE metadata IS NOT NULL")]


def per_record(fn, items) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = [fn(x) for x in items]
    return out, (time.perf_counter() - t0) / max(1, len(items)) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--db", help="an existing store to take records from")
    parser.add_argument("--dict-size", type=int, default=64 * 1024)
    args = parser.parse_args()
    print_header("metadata codec: zstd dictionary for small records")
    threshold = Config.defaults().io_optimization.compression_threshold
    db = args.db
    if db is None:
        work = tempfile.mkdtemp(prefix="cg-bench-codec-")
        db = os.path.join(work, "codec.cgdb")
        root = sysconfig.get_path("stdlib")
        with Store.open(db) as store:
            if args.quick:
                for name in ("json", "email", "asyncio"):
                    index_tree(store, os.path.join(root, name), jobs=1)
                    break  # one package is enough for a quick look
            else:
                index_tree(store, root)
    raw = records_from(db)
    small = [r for r in raw if len(r) < threshold]
    print(f"records: {len(raw)}, below the {threshold}-byte threshold: {len(small)}")
    random.seed(7)
    sample = random.sample(small, min(20000, len(small)))
    t0 = time.perf_counter()
    dictionary = zstandard.train_dictionary(args.dict_size, sample)
    train_s = time.perf_counter() - t0

    plain = sum(len(r) + 1 for r in small)
    no_dict = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL)
    frames_nd, enc_nd = per_record(no_dict.compress, small)
    size_nd = sum(min(len(f), len(r)) + 1 for f, r in zip(frames_nd, small))
    with_dict = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL, dict_data=dictionary)
    frames_d, enc_d = per_record(with_dict.compress, small)
    size_d = sum(min(len(f), len(r)) + 1 for f, r in zip(frames_d, small)) + len(dictionary.as_bytes())
    dec = zstandard.ZstdDecompressor(dict_data=dictionary)
    _, dec_d = per_record(dec.decompress, frames_d)
    _, dec_plain = per_record(lambda r: json.loads(r), small)

    rows = [
        Row("small records, plain JSON (current)", plain / 2**20, "MiB"),
        Row.latency("small records, zstd without dictionary", size_nd / 2**20, plain / 2**20, "MiB"),
        Row.latency("small records, zstd with dictionary (incl. dictionary)", size_d / 2**20,
                    plain / 2**20, "MiB"),
        Row("encode per record, no dictionary", enc_nd, "us"),
        Row("encode per record, dictionary", enc_d, "us"),
        Row("decompress per record, dictionary", dec_d, "us"),
        Row("json.loads per record (paid either way)", dec_plain, "us"),
        Row("dictionary training", train_s, "s"),
        Row("all metadata, plain JSON", sum(map(len, raw)) / 2**20, "MiB"),
        Row("database file", os.path.getsize(db) / 2**20, "MiB"),
    ]
    print_table(rows, title="ratio here = size against plain JSON (lower is smaller)", ratio_note=False)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
