"""hifa-pipeline: high-fidelity text-to-3D (HiFA) and DreamFusion baselines, reproducibly."""

__version__ = "0.1.0"
