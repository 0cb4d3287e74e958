"""argparse types of the `hifa` command line: positive numbers, CLIP backbone lists."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0 (not NaN)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def mesh_threshold(text: str) -> float | str:
    """argparse type: a positive finite density, or 'otsu' (hifa.steps.mesh.OTSU: the automatic level)."""
    if text.strip().lower() == "otsu":
        return "otsu"
    value = positive_float(text)
    if value == float("inf"):
        raise argparse.ArgumentTypeError("must be finite, got inf")
    return value


def clip_models(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated CLIP backbones, or 'none'."""
    if text.strip().lower() in ("none", ""):
        return ()
    return tuple(name.strip() for name in text.split(",") if name.strip())
