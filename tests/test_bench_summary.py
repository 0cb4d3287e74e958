"""The benchmark report's ratios and Markdown (pure functions over section figures)."""

import pytest

from benchmarks.summary import markdown, ratios


def test_ratios_compare_only_sections_that_ran():
    sections = {
        "guidance": {"sds_ms": 50.0, "hifa_k1_ms": 100.0, "hifa_k4_ms": 200.0},
        "guidance+compile@reduce-overhead": {"hifa_k4_ms": 80.0},
        "train_step_hifa": {"step_ms": 500.0},
        "train_step_hifa+occupancy": {"step_ms": 250.0},
        "train_step_hifa+checkpoint": {"step_ms": 600.0},
        "train_step_hifa+checkpoint@torch-grid": {"step_ms": 1500.0},
        "train_step_hifa-fast": {"skipped": "past the deadline"},
        "train_step_hifa-fast+occupancy+overlap": {"step_ms": 110.0, "step_ms_back_to_back": 90.0},
        "train_step_hifa-fast+occupancy": {"step_ms": 120.0, "step_ms_back_to_back": 120.0},
        "train_step_hifa+occupancy+overlap": {"skipped": "past the deadline"},
    }
    out = ratios(sections)
    assert out["guidance hifa K=4 / sds"] == pytest.approx(4.0)
    assert out["guidance hifa K=4, compiled as CUDA graphs / default"] == pytest.approx(0.4)
    assert out["train step hifa, occupancy grid / dense"] == pytest.approx(0.5)
    assert out["train step hifa+checkpoint, pure-PyTorch grid / default grid"] == pytest.approx(2.5)
    assert out["train step hifa-fast+occupancy, overlapped / waiting (back to back)"] == pytest.approx(0.75)
    assert "guidance hifa K=2 / sds" not in out and "train step hifa-fast / hifa" not in out
    assert not any(key.startswith("train step hifa+occupancy, overlapped") for key in out)


def test_markdown_lists_every_section_and_the_ratios():
    report = {"device_name": "cpu", "machine": {"date": "2026-11-26", "commit": "abc1234"},
              "sections": {"encoding": {"torch_points_per_s": 1.23456e6}}, "ratios": {"encoding cpp / torch speed-up": 3.14159}}
    text = markdown(report)
    assert text.startswith("# Benchmarks on cpu (2026-11-26, commit abc1234)")
    assert "- **encoding**: torch_points_per_s = 1.235e+06" in text and "- encoding cpp / torch speed-up: 3.14" in text
