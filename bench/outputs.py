"""What a worker's media work costs per output, by frame size: the encode
(``media/video.py``'s ``write_mp4``, as the preview engine calls it), the facts the answers
report (``output_facts``) and the poster (``make_poster``). The encode runs both ways,
alternately in one run: with the size rule (one thread up to ``ONE_THREAD_PIXELS``) and
with x264's own threads (``threads=0``, what every size got before the rule).

    python bench/outputs.py                   # 128x128 (the tests' jobs), 256x256, 480x272
    python bench/outputs.py --repeats 50

Prints one JSON line per size: CPU and wall milliseconds per output (process CPU time,
the encoder's threads included) and the ratio of the rule's encode CPU to the old one's.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidq.media.poster import make_poster
from vidq.media.video import ONE_THREAD_PIXELS, Frame, output_facts, write_mp4

SIZES = ((128, 128, 17), (256, 256, 17), (480, 272, 33))  # width, height, frames (16 fps)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _scene(width: int, height: int, frames: int) -> list[Frame]:
    """Moving gradients: as compressible as the preview engine's scenes."""
    y, x = np.mgrid[0:height, 0:width]
    return [
        np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, ((x + y) // 2 + i) % 256], -1).astype(
            np.uint8
        )
        for i in range(frames)
    ]


def _each(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """CPU and wall milliseconds per call."""
    c0, t0 = _cpu(), time.perf_counter()
    for _ in range(repeats):
        fn()
    return (_cpu() - c0) * 1000 / repeats, (time.perf_counter() - t0) * 1000 / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="outputs per measurement")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video, still = Path(tmp) / "out.mp4", Path(tmp) / "poster.jpg"
        for width, height, n in SIZES:
            frames = _scene(width, height, n)

            rule, before = [0.0, 0.0], [0.0, 0.0]
            for _ in range(2):  # alternated, so that both see the same machine
                for got, threads in ((rule, None), (before, 0)):
                    encode = functools.partial(
                        write_mp4, video, frames, width=width, height=height, fps=16,
                        threads=threads,
                    )  # fmt: skip
                    cpu, wall = _each(encode, args.repeats)
                    got[0] += cpu / 2
                    got[1] += wall / 2
            facts = _each(lambda: output_facts(video), args.repeats)
            poster = _each(lambda: make_poster(video, still), args.repeats)
            print(json.dumps({
                "size": f"{width}x{height}", "frames": n,
                "one_thread": width * height <= ONE_THREAD_PIXELS,
                "encode_ms": {"cpu": round(rule[0], 2), "wall": round(rule[1], 2)},
                "encode_x264_threads_ms": {"cpu": round(before[0], 2), "wall": round(before[1], 2)},
                "encode_cpu_ratio": round(rule[0] / before[0], 3),
                "facts_ms": {"cpu": round(facts[0], 2), "wall": round(facts[1], 2)},
                "poster_ms": {"cpu": round(poster[0], 2), "wall": round(poster[1], 2)},
            }))  # fmt: skip


if __name__ == "__main__":
    main()
