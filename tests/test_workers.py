"""workers.py: training in processes, the code-hash guard, workers that die with their parent."""
import signal
import time

import pytest

import helpers
import workers
from conftest import children, config, process_alive, python


@pytest.mark.slow
def test_models_trained_side_by_side_equal_models_trained_alone(face_data):
    """fit_all's processes do not change the numbers: one job alone, or two at once."""
    quick = config(steps=6, batch_size=64)
    jobs = [helpers.Job(quick.model(8), quick.recipe(seed=1)), helpers.Job(quick.model(8), quick.recipe())]
    together = helpers.fit_all(face_data, jobs)
    alone = helpers.fit(face_data, quick.model(8), quick.recipe())
    assert together[1].history["val_mse"] == alone.history["val_mse"]
    assert together[0].history["val_mse"] != alone.history["val_mse"]


def test_a_training_process_refuses_other_code(monkeypatch):
    monkeypatch.setitem(workers._WORKER, "parent_method_sha256", "other code")
    with pytest.raises(RuntimeError, match="helpers.py changed on disk"):
        workers._run_job(None)


@pytest.mark.slow
def test_training_processes_die_with_their_parent():
    code = ("import torch, helpers\n"
            "x = torch.rand(16, 3, 16, 16); y = torch.zeros(16, dtype=torch.long)\n"
            "split = helpers.Split(x[:8].mul(255).byte(), ['a'] * 8, y[:8], x, y, torch.arange(16) % 8)\n"
            "data = helpers.Data({'train': split, 'val': split}, ['a'], {})\n"
            "job = helpers.Job(helpers.AEConfig(4, 4, 16), helpers.TrainConfig(10 ** 6, 8, 1e-3, 0.0, 0))\n"
            "helpers.fit_all(data, [job, job])\n")
    parent = python(code)
    deadline = time.time() + 60
    while len(workers := children(parent.pid)) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert len(workers) >= 2, "the training processes did not start"
    time.sleep(2)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while any(process_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.5)
    assert not [pid for pid in workers if process_alive(pid)]
