"""import_backend undoes TensorFlow's malloc patch, which made training fault in every batch buffer.

Each check runs in a fresh interpreter: the patch and the thresholds are per process, set once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Builds a generator dataset as Keras' fit on a PyDataset does (TensorFlow patches malloc there),
# then allocates and frees a 4 MB buffer 200 times, as a training step does with its batches,
# and reports the page faults that cost.
PROBE = """
import json, resource, sys
sys.path.insert(0, {repo!r})
import numpy as np
import training.backend as backend
if {disable!r}:
    backend.restore_malloc_thresholds = lambda: False
backend.import_backend()
import tensorflow as tf
for _ in tf.data.Dataset.from_generator(lambda: iter((1, 2)), output_signature=tf.TensorSpec((), tf.int32)):
    pass
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    np.ones(1 << 20, dtype=np.float32).sum()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _faults(disable: bool, probe: str = PROBE) -> int:
    """Page faults a probe reports, run in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", probe.format(repo=str(REPO), disable=disable)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc thresholds: Linux only")
@pytest.mark.slow  # scores hundreds of batches in a child process
def test_batch_buffers_are_reused_instead_of_faulted_in_again() -> None:
    patched = _faults(disable=True)
    if patched < 200 * 256:  # 4 MB is 1,024 pages; with the patch each buffer faults them all in
        pytest.skip(
            f"this TensorFlow no longer patches malloc ({patched} faults for 200 buffers): "
            "restore_malloc_thresholds is no longer needed"
        )
    restored = _faults(disable=False)
    assert restored < patched / 20, (restored, patched)


# A scoring process's largest buffers (the first convolution's output, 39 MB per network for a
# batch of 64) are above glibc's 32 MB mmap ceiling: allocated, written and freed 20 times, as 20
# batches, through malloc as TensorFlow's CPU allocator does (NumPy would ask for huge pages).
SERVING_PROBE = """
import ctypes, json, resource, sys
sys.path.insert(0, {repo!r})
import training.backend as backend
backend.import_backend()
assert {disable!r} or backend.serve_from_heap()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    buffer = libc.malloc(40 << 20)
    ctypes.memset(buffer, 1, 40 << 20)
    libc.free(buffer)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
@pytest.mark.slow  # scores hundreds of batches in a child process
def test_a_scoring_process_reuses_its_largest_buffers_instead_of_mapping_them_each_batch() -> None:
    mapped = _faults(disable=True, probe=SERVING_PROBE)
    assert mapped > 20 * 5000, mapped  # 40 MB is 10,240 pages, faulted in for every buffer
    kept = _faults(disable=False, probe=SERVING_PROBE)
    assert kept < mapped / 5, (kept, mapped)  # the first buffer's pages, then the same ones again
