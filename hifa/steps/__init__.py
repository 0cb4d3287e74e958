"""The per-run pipeline steps after training: render, depth, mesh, evaluate (each reads a run folder R)."""
