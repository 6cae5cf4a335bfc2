"""Where the models train: the device, bfloat16 where the CPU has it, and on the CPU the
processes that `helpers.fit_all` trains its models in.

Each model trains with one thread in a process of its own, one process per core: on two
cores that is about 1.6 times the throughput of one two-thread training, and a model's
numbers do not depend on what trains beside it. A process ends when the notebook's kernel
is gone, and refuses to train when helpers.py changed on disk after the kernel imported it.
"""
import hashlib
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

METHOD = Path(__file__).resolve().parent / "helpers.py"
METHOD_SHA256 = hashlib.sha256(METHOD.read_bytes()).hexdigest()   # as this process imported it
_WORKER = {}


def pick_device():
    """The accelerator torch finds (cuda, mps, ...), else the cpu."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")


def map_in_processes(function, data, jobs):
    """`function(data, job)` for every job, in spawned processes; the results in job order."""
    processes = max(1, min(len(jobs), os.cpu_count() or 1))
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(function, data, METHOD_SHA256, os.getpid())) as pool:
        return list(pool.map(_run_job, jobs))


def _start_worker(function, data, parent_method_sha256, parent):
    """A training process: one thread, the parent's data, and a watch on the parent."""
    torch.set_num_threads(1)
    _WORKER.update(function=function, data=data, parent_method_sha256=parent_method_sha256)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent, every=1.0):
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _run_job(job):
    if METHOD_SHA256 != _WORKER["parent_method_sha256"]:
        raise RuntimeError("helpers.py changed on disk since the notebook imported it, so a "
                           "training process would run other code. Run the notebook again.")
    return _WORKER["function"](_WORKER["data"], job)


def native_bf16():
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX): there autocast
    trains about 1.3 times faster (make bench); elsewhere it is many times slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
