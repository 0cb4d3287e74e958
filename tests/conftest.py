"""Shared test set-up: offline, quiet, and one torch thread per xdist worker."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def oracle_bank(tmp_path_factory):
    """One oracle bank folder per xdist worker, shared across modules (a bank takes seconds to build)."""
    return tmp_path_factory.getbasetemp() / "oracle-bank"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random Stable Diffusion and DPT checkpoints on disk (the tiny world), built once per test module."""
    from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion

    root = tmp_path_factory.mktemp("tiny-models")
    return build_tiny_stable_diffusion(root / "sd"), build_tiny_dpt(root / "dpt")


@pytest.fixture
def overlap_on_cpu(monkeypatch):
    """overlap_steps as on CUDA (it is inert on a CPU, where a step never waits for a GPU): its logic, tested here."""
    import hifa.trainer

    monkeypatch.setattr(hifa.trainer, "overlap_applies", lambda config, device: config.overlap_steps)
