"""Fuzz the loaders (tests/fuzz.py) with many mutations per kind and print the counts:
mutated files, loaded to the same result, refused with one line (exit 2), valid but different
(an ONNX node or attribute edited into another legal model), and failures (tracebacks, hangs,
wrong results, outputs written on refusal), with the first of each failure.

    .venv/bin/python scripts/fuzz_loaders.py [N per kind, default 500]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from tests.fuzz import KINDS, fuzz_one, make_originals

    warnings.filterwarnings("ignore")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    folder = Path(tempfile.mkdtemp(prefix="mamfpga-fuzz-"))
    originals = make_originals(folder / "originals")
    print(f"{'kind':<8}{'mutated':>9}{'same':>7}{'refused':>9}{'valid':>7}{'failed':>8}{'s':>7}")
    failed = 0
    for kind in KINDS:
        c, first = Counter(), {}
        t = time.perf_counter()
        for i in range(n):
            o = fuzz_one(kind, originals, random.Random(i), folder / f"work-{kind}")
            c[o.result] += 1
            if not o.ok:
                first.setdefault(o.result, o)
        bad = sum(v for k, v in c.items() if k not in ("same", "rejected", "valid"))
        failed += bad
        print(f"{kind:<8}{n:>9}{c['same']:>7}{c['rejected']:>9}{c['valid']:>7}{bad:>8}{time.perf_counter() - t:>7.0f}")
        for o in first.values():
            print(f"    {o.result}: {o.mutation}: {o.detail.strip().splitlines()[-1] if o.detail.strip() else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
