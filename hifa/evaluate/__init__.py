"""Evaluation: image metrics, geometry metrics against ground truth (CLIP metrics come later)."""
