"""Issue 8.7, resource faults: CUDA out of memory (simulated on CPU: torch.OutOfMemoryError raised from the
renderer or the prior) and a full disk (ENOSPC in the middle of an atomic write) give one `hifa: error:`
line naming what to change; the previous checkpoint stays intact and `--resume` finishes the run with
the same weights as a run that never failed."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from hifa import cli
from hifa.guidance.oracle import OraclePrior
from hifa.renderer import Renderer
from hifa.trainer import Trainer
from tests.reliability.helpers import PROMPT, assert_same_training, tiny_config, tiny_overrides

OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def train_argv(tmp_path: Path, run: Path, *extra: str, db: Path | None = None) -> list[str]:
    sets = [f"--set={o}" for o in tiny_overrides(tmp_path / "cache", db)]
    return ["train", "--prompt", PROMPT, "--prior", "oracle", "--quiet", "--out", str(run), *sets, *extra]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hifa:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def raise_at_call(monkeypatch, cls, name: str, call: int, error: BaseException) -> None:
    """Make cls.name raise `error` on its call-th call."""
    original, calls = getattr(cls, name), [0]

    def failing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing)


@pytest.mark.parametrize("source", ["renderer", "prior", "cpu allocator"])
def test_out_of_memory_in_training_names_the_memory_settings(source, tmp_path, monkeypatch, capsys):
    if source == "renderer":  # calls 1-4 are the steps' renders (the first validation comes at step 6)
        raise_at_call(monkeypatch, Renderer, "forward", 5, OOM("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)"))
    elif source == "prior":  # the first denoiser call of step 5
        step_now, original_step, original_eps = [0], Trainer.training_step, OraclePrior.predict_eps

        def training_step(self, step):
            step_now[0] = step
            return original_step(self, step)

        def predict_eps(self, *args, **kwargs):
            if step_now[0] == 5:
                raise OOM("CUDA out of memory. Tried to allocate 20.00 MiB")
            return original_eps(self, *args, **kwargs)

        monkeypatch.setattr(Trainer, "training_step", training_step)
        monkeypatch.setattr(OraclePrior, "predict_eps", predict_eps)
    else:
        raise_at_call(monkeypatch, Renderer, "forward", 5, RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    db, run = tmp_path / "mlflow.db", tmp_path / "run"
    code = cli.main(train_argv(tmp_path, run, db=db))
    line = error_line(capsys)
    assert code == 2 and line.startswith("hifa: error: out of memory at step 5 ("), line
    for knob in ("lower resolution (now 16)", "renderer.num_coarse / renderer.num_fine (now 12 / 6)", "renderer.chunk_rays (now 4096)",
                 "prior.precision=float16 (now auto)", "the last checkpoint (step 3) is kept: continue with `hifa train --resume`"):
        assert knob in line, (knob, line)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    from mlflow.tracking import MlflowClient

    assert MlflowClient(f"sqlite:///{db}").get_run(json.loads((run / "run.json").read_text())["run_id"]).info.status == "FAILED"


def test_out_of_memory_in_render_names_its_options(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    Trainer(tiny_config(tmp_path, extra=("iterations=3",)), run, progress=False).train()
    raise_at_call(monkeypatch, Renderer, "forward", 1, OOM("CUDA out of memory. Tried to allocate 8.00 GiB"))
    code = cli.main(["render", str(run), "--views", "2", "--resolution", "16", "--quiet"])
    line = error_line(capsys)
    assert code == 2 and line == "hifa: error: out of memory (CUDA out of memory. Tried to allocate 8.00 GiB); lower --resolution or --chunk-rays", line
    assert not (run / "render" / "render.json").exists()


class DiskFull:
    """A file object that writes half of what it is given, then fails like a full disk."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()
        return False


def fill_disk_at(monkeypatch, name: str, occurrence: int) -> None:
    """The occurrence-th atomic write of a file called `name` runs out of space half-way."""
    real_mkstemp, real_fdopen, temporaries, seen = tempfile.mkstemp, os.fdopen, {}, [0]

    def mkstemp(*args, **kwargs):
        fd, path = real_mkstemp(*args, **kwargs)
        temporaries[fd] = Path(path).name
        return fd, path

    def fdopen(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if temporaries.pop(fd, "").startswith(f".{name}."):
            seen[0] += 1
            if seen[0] == occurrence:
                return DiskFull(handle)
        return handle

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)


def test_full_disk_keeps_the_previous_checkpoint_and_resume_matches(tmp_path, monkeypatch, capsys):
    reference = Trainer(tiny_config(tmp_path / "ref"), tmp_path / "ref" / "run", progress=False)
    reference.train()
    db, run = tmp_path / "mlflow.db", tmp_path / "run"

    # 1. The second checkpoint (step 6) hits a full disk half-way through its temporary file.
    with monkeypatch.context() as patch:
        fill_disk_at(patch, "checkpoint.pt", 2)
        code = cli.main(train_argv(tmp_path, run, db=db))
    line = error_line(capsys)
    assert code == 2 and line.startswith(f"hifa: error: checkpoint of step 6 not saved: cannot write {run / 'checkpoint.pt'} ("), line
    assert "No space left on device; the previous file is intact" in line and "it still holds step 3" in line, line
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert not list(run.rglob(".*.tmp")), "the half-written temporary file is removed"
    from mlflow.tracking import MlflowClient

    run_id = json.loads((run / "run.json").read_text())["run_id"]
    assert MlflowClient(f"sqlite:///{db}").get_run(run_id).info.status == "FAILED"

    # 2. Resumed with room again, the final views then hit a full disk: the finished checkpoint stays.
    with monkeypatch.context() as patch:
        fill_disk_at(patch, "final_views.png", 1)
        code = cli.main(train_argv(tmp_path, run, "--resume", db=db))
    line = error_line(capsys)
    assert code == 2 and line.startswith(f"hifa: error: cannot write {run / 'final_views.png'} ("), line
    assert "No space left on device; nothing was written (free some space and run the command again)" in line, line
    assert not (run / "final_views.png").exists() and not (run / "train_summary.json").exists()

    # 3. A full disk seen by another library (here: the mesh export) is one line too.
    with monkeypatch.context() as patch:
        def no_space(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "mesh.glb"))

        patch.setattr("hifa.training.export_mesh", no_space)
        code = cli.main(train_argv(tmp_path, run, "--resume", db=db))
    line = error_line(capsys)
    assert code == 2 and line.startswith(f"hifa: error: no space left on the device writing {run / 'mesh.glb'} ("), line

    # 4. With room, --resume finishes: the same weights and log as the run that never failed.
    assert cli.main(train_argv(tmp_path, run, "--resume", db=db)) == 0
    assert json.loads((run / "train_summary.json").read_text())["steps"] == 12
    assert_same_training(torch.load(reference.run_dir / "checkpoint.pt", weights_only=True), torch.load(run / "checkpoint.pt", weights_only=True))
    assert MlflowClient(f"sqlite:///{db}").get_run(run_id).info.status == "FINISHED"
