"""How long `import ember` takes beyond `import numpy` (CPU time of the imports, the best of
five fresh interpreters: steady on a loaded machine, unlike wall time). The budget is 0.3 s.

    python bench/bench_import.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 0.3
CODE = (
    "import time\n"
    "t0 = time.process_time(); import numpy; t1 = time.process_time()\n"
    "import ember; t2 = time.process_time()\n"
    "print(t2 - t1)\n"
)


def main():
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT, check=True
            ).stdout
        )
        for _ in range(5)
    ]
    best = min(times)
    verdict = "within" if best < BUDGET_S else "OVER"
    print(f"import ember: {best * 1e3:.0f} ms CPU beyond numpy ({verdict} the {BUDGET_S} s budget)")
    print(json.dumps({"bench": "import ember", "seconds": round(best, 4), "budget_s": BUDGET_S}))
    return best


if __name__ == "__main__":
    main()
