"""Import Keras and its backend once, quietly, and fix the thread budget for this process."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def _stderr_muted() -> Iterator[None]:
    """Silence file descriptor 2: TensorFlow's C++ start-up banner bypasses Python's logging."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_backend(threads: int | None = None, gpu_memory_growth: bool = False) -> None:
    """Import keras (and TensorFlow when it is the backend) without the start-up banner.

    threads caps TensorFlow's intra-op pool; a worker running one process per core passes 1 so
    processes do not fight over cores. A GPU worker asks for memory growth.
    """
    if "keras" in sys.modules:
        return
    with _stderr_muted():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            if gpu_memory_growth:  # share a GPU politely instead of taking all its memory
                for gpu in tf.config.list_physical_devices("GPU"):
                    tf.config.experimental.set_memory_growth(gpu, True)
            if threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
