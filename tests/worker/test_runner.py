"""Worker process layout: one process per core, or one per GPU with each pinned to its device.

No GPU exists on the test machines, so the GPU layout is checked as the environment each pool
process would set (CUDA_VISIBLE_DEVICES), not by running TensorFlow on a GPU.
"""

from __future__ import annotations

import os

from brainscan.settings import Settings
from worker.process import gpu_for_process, node_prefix, worker_name
from worker.runner import model_threads, pool_size


def test_cpu_worker_uses_one_process_per_core_and_splits_threads() -> None:
    cores = os.cpu_count() or 1
    assert pool_size(Settings()) == cores
    assert pool_size(Settings(worker_concurrency=3)) == 3
    assert model_threads(Settings(), processes=cores) == 1
    assert model_threads(Settings(), processes=1) == cores
    assert model_threads(Settings(model_threads=4), processes=2) == 4


def test_gpu_worker_runs_one_process_per_gpu_each_on_its_own_device() -> None:
    settings = Settings(worker_gpus=4, worker_concurrency=16)
    assert pool_size(settings) == 4
    assert [gpu_for_process(i, 4) for i in range(4)] == ["0", "1", "2", "3"]
    assert gpu_for_process(5, 4) == "1"  # a replaced pool process keeps the round robin
    assert gpu_for_process(0, 0) is None


def test_worker_names_end_with_the_task_id_so_a_retry_can_reclaim() -> None:
    name = worker_name("5f0c-task", "brainscan-12@node")
    assert name.endswith(":5f0c-task") and name.count(":") == 2
    assert name.startswith(node_prefix("brainscan-12@node")) and not name.startswith(
        node_prefix("brainscan-1@node")
    )
