"""Training speed: the shipped recipe's epochs, several fits side by side, with TensorFlow's malloc
patch left in place (the baseline) and undone as `training.backend.import_backend` does.

    python bench/train_speed.py                      # 5 fits side by side, as `--cv 5 --workers 5`
    python bench/train_speed.py --processes 1 --images 800
    python bench/train_speed.py --threads 1          # one TensorFlow thread per fit

Each fit is a separate process training one network of the shipped recipe (`members=1`, and
`epochs` as given) on random 160 x 160 images, so no data is needed. The baseline and the restored
runs go one after the other in the same invocation. Per mode: the mean wall time of an epoch after
the first (the first compiles), the system CPU seconds and minor page faults per epoch and
process, and the wall time of the whole run; then restored / baseline ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("patched", "restored")


def child(mode: str, images: int, epochs: int, threads: int) -> None:
    """One fit; prints a JSON line per epoch."""
    import training.backend as backend

    if mode == "patched":  # leave TensorFlow's mallopt(M_TRIM_THRESHOLD, 128 kB) in force
        backend.restore_malloc_thresholds = lambda: False
    backend.import_backend(threads or None)
    import keras

    from training.recipes import SHIPPED
    from training.train import fit

    class Meter(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started, self.usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            now = resource.getrusage(resource.RUSAGE_SELF)
            print(
                json.dumps(
                    {
                        "epoch": epoch + 1,
                        "wall": time.perf_counter() - self.started,
                        "sys": now.ru_stime - self.usage.ru_stime,
                        "faults": now.ru_minflt - self.usage.ru_minflt,
                    }
                ),
                flush=True,
            )

    import training.train as train_module

    printer = train_module.EpochPrinter
    train_module.EpochPrinter = lambda *a, **k: Meter()  # type: ignore[assignment,misc]
    try:
        rng = np.random.default_rng(0)
        x = rng.random((images, 160, 160, 1), dtype=np.float32)
        y = (rng.random(images) < 0.7).astype(np.int64)
        cut = images * 4 // 5
        recipe = SHIPPED.with_settings((f"epochs={epochs}", "members=1"))
        fit(
            x[:cut],
            y[:cut],
            x[cut:],
            y[cut:],
            network=recipe.network,
            optimisation=recipe.optimisation,
            seed=recipe.policy.seed,
        )
    finally:
        train_module.EpochPrinter = printer


def run(mode: str, processes: int, images: int, epochs: int, threads: int) -> dict[str, float]:
    started = time.perf_counter()
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--images",
        str(images),
        "--epochs",
        str(epochs),
        "--threads",
        str(threads),
    ]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(processes)
    ]
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            sys.exit(f"a {mode} fit failed (exit {p.returncode})")
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    later = [r for r in rows if r["epoch"] > 1]
    return {
        "epoch_s": float(np.mean([r["wall"] for r in later])),
        "sys_s": float(np.mean([r["sys"] for r in later])),
        "faults": float(np.mean([r["faults"] for r in later])),
        "total_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--processes", type=int, default=5, help="fits side by side")
    parser.add_argument("--images", type=int, default=640, help="per fit (4/5 train, 1/5 validation)")
    parser.add_argument("--epochs", type=int, default=3, help="at least 2: the first is not counted")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads per fit (0: its default, one per core, as training runs)",
    )
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.epochs, args.threads)
        return
    if args.epochs < 2:
        sys.exit("--epochs must be at least 2")
    print(
        f"{args.processes} fits side by side, {args.images} images, {args.epochs} epochs each, "
        f"TensorFlow threads: {args.threads or 'default'}"
    )
    results = {}
    for mode in MODES:
        results[mode] = run(mode, args.processes, args.images, args.epochs, args.threads)
        r = results[mode]
        print(
            f"{mode:<9} epoch {r['epoch_s']:6.1f} s   system CPU {r['sys_s']:5.1f} s/epoch   "
            f"page faults {r['faults']:>10,.0f}/epoch   whole run {r['total_s']:6.1f} s",
            flush=True,
        )
    base, new = results["patched"], results["restored"]
    print(
        f"restored / patched: epoch {new['epoch_s'] / base['epoch_s']:.2f}x, "
        f"whole run {new['total_s'] / base['total_s']:.2f}x, "
        f"page faults {new['faults'] / base['faults']:.3f}x"
    )


if __name__ == "__main__":
    main()
