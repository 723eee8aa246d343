"""Run every benchmark script in bench/ (each prints ratios and JSON lines)."""

import pathlib
import runpy
import sys

here = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(here))
sys.path.insert(0, str(here.parent))
only = sys.argv[1:]
for script in sorted(here.glob("bench_*.py")):
    if only and not any(name in script.name for name in only):
        continue
    print(f"== {script.name}")
    runpy.run_path(str(script), run_name="__main__")
