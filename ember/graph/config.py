"""Switches for compiled functions (`ember.config`).

- `run_eagerly`: when True every `ember.compile` / `ember.function` / `tf.function` runs its
  Python function eagerly (for debugging with prints and breakpoints); also set by the
  environment variable EMBER_RUN_EAGERLY=1.
- `max_cache_size`: compiled graphs kept per function (least recently used dropped).
- `retrace_warning_after`: warn once a function has been retraced this many times.
- `fusion`: fuse elementwise chains into generated kernels (EMBER_FUSION=0 turns it off;
  Note [Fusion]); the kernels are compiled with numba when it is installed (the `fast` extra)
  and run as NumPy otherwise or with EMBER_NO_NUMBA=1.
Printing the graph after each compiler stage: EMBER_PRINT_GRAPH=1.
"""

from __future__ import annotations

from ember._util.env import flag, integer

run_eagerly: bool = flag("EMBER_RUN_EAGERLY")
max_cache_size: int = integer("EMBER_COMPILE_CACHE_SIZE", 16)
retrace_warning_after: int = integer("EMBER_RETRACE_WARNING", 5)
fusion: bool = flag("EMBER_FUSION", True)
