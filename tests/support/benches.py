"""Runs a benchmark script of ``bench/`` in the test's own process: ``run_bench(script,
*args)`` loads ``bench/<script>`` as a module (not as ``__main__``, so it does not exit) and
calls its ``main()`` with ``args`` as its command line, returning its exit status.

The GPU benchmarks' tests (``--tiny`` on the CPU) run them so: the script's own code end
to end, without a second interpreter that imports torch, diffusers and transformers again
(about 7 CPU-s a process). Their files are in the ``torch`` lane (``lanes.py``), whose
worker has imported those already."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.processes import ROOT


def run_bench(script: str, *args: str) -> int:
    """``bench/<script>``'s ``main()`` run with ``args``; its exit status."""
    path = ROOT / "bench" / script
    namespace = runpy.run_path(str(path), run_name=f"bench_{Path(script).stem}")
    main: Callable[[], int] = namespace["main"]
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        return main()
    finally:
        sys.argv = saved
