"""gunicorn config of ``bench/memory.py --breakdown``: tracemalloc in the worker, snapshots on request.

``gunicorn -c bench/memory_gconf.py …`` with ``BENCH_TRACEMALLOC_DIR`` set to an empty directory.
After the worker booted it starts ``tracemalloc`` (``BENCH_TRACEMALLOC_FRAMES`` frames per trace,
default 1: allocation sites grouped by file:line) and a greenlet that looks into that directory
every 0.2 s: for each ``LABEL.request`` file it collects garbage, takes a snapshot, dumps it to
``LABEL.snap`` (written under another name, then renamed) with ``LABEL.json`` (tracemalloc's own
memory and the traced totals), and removes the request. Never used outside that benchmark.
"""

import gc
import json
import os
import tracemalloc
from pathlib import Path


def post_worker_init(worker):
    import gevent

    directory = Path(os.environ["BENCH_TRACEMALLOC_DIR"])
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))

    def take(label: str) -> None:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        partial = directory / f"{label}.partial"
        snapshot.dump(str(partial))
        (directory / f"{label}.json").write_text(
            json.dumps(
                {
                    "traced": current,
                    "traced_peak": peak,
                    "tracemalloc_memory": tracemalloc.get_tracemalloc_memory(),
                }
            )
        )
        del snapshot
        partial.rename(directory / f"{label}.snap")

    def watch() -> None:
        while True:
            gevent.sleep(0.2)
            for request in sorted(directory.glob("*.request")):
                take(request.stem)
                request.unlink()

    gevent.spawn(watch)
    worker.log.info(
        "tracemalloc on (%s frame(s)); snapshots on request in %s",
        tracemalloc.get_traceback_limit(),
        directory,
    )
