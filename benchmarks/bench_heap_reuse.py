"""What keeping freed tensor buffers (``inference/heap_reuse.py``) changes, in fresh processes.

glibc's heap policy belongs to the whole process, so the two settings cannot be interleaved in
one process: each round starts one child with the C library's defaults and one that calls
``keep_freed_buffers()`` first, taking turns. Each child loads the model, encodes a nuclei3d
slice twice untimed, then times ``--encodes`` encodes per runtime and reports the median and its
peak RSS. Usage::

    python benchmarks/bench_heap_reuse.py --models litemedsam,swin-litemedsam --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_swinlitemedsam.inference.cpu_features import describe_cpu
from report import Row, markdown_table

SECTION = "heap reuse"
SETTINGS = ("C library defaults", "freed buffers kept")


def child(model_name: str, runtimes: list[str], keep: bool, encodes: int) -> dict:
    """In the child process: seconds per encode (median) per runtime, peak RSS in MiB."""
    import resource
    import time

    from napari_swinlitemedsam.inference.heap_reuse import keep_freed_buffers

    applied = keep_freed_buffers() if keep else False
    from bench_setup import build_model, make_predictor, nuclei_case

    planes = list(nuclei_case(1, 3).volume)
    model = build_model(model_name)
    seconds = {}
    for runtime in runtimes:
        predictor = make_predictor(model, model_name, runtime=runtime)
        predictor.encode(planes[0])
        predictor.encode(planes[1])
        times = []
        for index in range(encodes):
            started = time.perf_counter()
            predictor.encode(planes[index % len(planes)])  # no key: encoded every time
            times.append(time.perf_counter() - started)
        seconds[runtime] = statistics.median(times)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"applied": applied, "seconds": seconds, "peak_mib": peak_mib}


def heap_rows(model_name: str, runtimes: list[str], rounds: int, encodes: int) -> list[Row]:
    results: dict[str, list[dict]] = {setting: [] for setting in SETTINGS}
    for _ in range(rounds):
        for setting in SETTINGS:
            command = [
                sys.executable,
                __file__,
                "--child",
                json.dumps([model_name, runtimes, setting == SETTINGS[1], encodes]),
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[setting].append(json.loads(output.strip().splitlines()[-1]))
    rows = []
    for runtime in runtimes:
        base = statistics.median(r["seconds"][runtime] for r in results[SETTINGS[0]])
        for setting in SETTINGS:
            runs = results[setting]
            median = statistics.median(r["seconds"][runtime] for r in runs)
            peak = statistics.median(r["peak_mib"] for r in runs)
            applied = all(r["applied"] for r in runs) if setting == SETTINGS[1] else False
            rows.append(
                Row(
                    SECTION,
                    f"{model_name}: {runtime} encode, {setting}",
                    f"{median:.2f} s",
                    f"**{base / median:.2f}×** the defaults; peak RSS {peak:.0f} MiB; "
                    f"median of {rounds} processes x {encodes} encodes"
                    + ("" if setting == SETTINGS[0] or applied else "; NOT applied here"),
                    {"seconds": median, "ratio": base / median, "peak_mib": peak},
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="litemedsam,swin-litemedsam")
    parser.add_argument("--runtimes", default="torch,onnxruntime")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--encodes", type=int, default=4)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    rows = []
    for name in args.models.split(","):
        rows += heap_rows(name, args.runtimes.split(","), args.rounds, args.encodes)
    print(f"CPU: {describe_cpu().summary()}")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
