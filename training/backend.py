"""Import Keras and its backend once, quietly, and fix the thread budget for this process."""

from __future__ import annotations

import contextlib
import ctypes
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


_configured = False


def import_backend(threads: int | None = None, gpu_memory_growth: bool = False) -> None:
    """Import keras (and TensorFlow when it is the backend) without the start-up banner.

    threads caps TensorFlow's intra-op pool; a worker running one process per core passes 1 so
    processes do not fight over cores. A GPU worker asks for memory growth. The first call in a
    process configures it, whether or not something imported keras before (a spawned process
    does, unpickling its task); later calls change nothing.
    """
    global _configured
    if _configured:
        return
    _configured = True
    # TensorFlow's C++ INFO and WARNING lines (CPU features, "Starting new session", GPUs found)
    # go to stderr in every process and read as errors to an operator; errors still show, and a
    # value set by the operator wins
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
            restore_malloc_thresholds()


def threads_per_process(processes: int) -> int:
    """TensorFlow threads for each of `processes` processes sharing this machine: the cores shared
    out, at least one each. TensorFlow's default, a pool of every core in every process, ran 5
    training fits on 2 cores at 1.25x the epoch time of one thread each (bench/train_speed.py)."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def intra_op_threads() -> int | None:
    """TensorFlow's intra-op thread count as configured in this process (0: its default, one per
    core); None under another Keras backend."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return int(tf.config.threading.get_intra_op_parallelism_threads())


# glibc's mallopt() parameters, and the values its dynamic thresholds settle at for a process that
# allocates large buffers: mmap only above 32 MB (its ceiling on 64-bit), give the heap back above
# twice that.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_TRIM_BYTES, _MMAP_BYTES = 64 << 20, 32 << 20
_SERVING_TRIM_BYTES = 1 << 30  # a scoring process keeps up to 1 GB of freed heap


def _glibc() -> ctypes.CDLL | None:
    """The C library, for mallopt(); None where it is not glibc (the thresholds are glibc's)."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def restore_malloc_thresholds() -> bool:
    """Undo TensorFlow's malloc patch, so that training does not spend half its CPU time in the kernel.

    The first tf.data generator dataset a process builds (every Keras fit on a PyDataset) calls
    mallopt(M_TRIM_THRESHOLD, 128 kB) ("Memory patch applied" in TensorFlow 2.21's log). Setting
    any threshold also freezes glibc's mmap threshold at its 128 kB start, so every batch-sized
    buffer is then mmap'd, faulted in page by page, and unmapped again: with 5 fits side by side
    on 2 cores an epoch took 66.6 s, 11.8 s of it system time, and 2.9 million page faults,
    against 36.0 s, 1.1 s and 0.15 million with the thresholds restored (bench/train_speed.py,
    docs/benchmarks.md). This builds one such dataset now, so the patch is spent, and then sets
    glibc's usual large-buffer thresholds.
    Returns False where there is no glibc to tell (the patch is glibc-only too)."""
    import tensorflow as tf

    libc = _glibc()
    if libc is None:
        return False
    spent = tf.data.Dataset.from_generator(lambda: iter((0,)), output_signature=tf.TensorSpec((), tf.int32))
    for _ in spent:
        pass
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)
    return bool(mmap_set and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def one_blas_thread() -> None:
    """NumPy's BLAS (OpenBLAS) on one thread in a scoring process. The out-of-distribution
    distance (training.ood) is a small matrix product per batch; OpenBLAS ran it on every core and
    its threads then spun waiting for more work, taking the cores from the decode threads: end to
    end from JPEG 0.71x without this (558 against 787 images/s, bench/model_speed.py, 2 AVX2
    cores), 1.0x with it. TensorFlow's own thread pools are not affected."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def serve_from_heap() -> bool:
    """Keep every buffer on the heap in a scoring process, so each batch reuses the last one's
    memory instead of mapping fresh pages and faulting them in.

    glibc maps any buffer above 32 MB (its ceiling for the mmap threshold) with mmap and unmaps
    it on free; the first convolution's output for a batch of 64 slices is 39 MB per network, so
    every batch faulted its pages in afresh: about 300 minor page faults per image scored on
    2 AVX2 cores, against about 10 with mmap off and up to 1 GB of freed heap kept, and the
    model alone ran 1.13x faster (bench/model_speed.py with and without --glibc-malloc, runs
    alternated; docs/benchmarks.md). A scoring process's working set is the same every batch, so
    the heap it keeps is what it would map again for the next one.
    Only for processes that serve a model: training keeps glibc's thresholds
    (`restore_malloc_thresholds`). Returns False where there is no glibc to tell."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _SERVING_TRIM_BYTES))
