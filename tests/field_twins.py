"""A field with fitted-size grid features and its twin of another MLP precision (same weights)."""

from dataclasses import replace

import torch

from hifa.field import FieldConfig, NeRFField


def fitted_field(config: FieldConfig, spread: float, seed: int = 0) -> NeRFField:
    """A field whose grid features are uniform in [-spread, spread]: a fitted grid's size, not a fresh one's ~1e-4."""
    torch.manual_seed(seed)
    field = NeRFField(config)
    with torch.no_grad():
        for table in field.encoding.tables:
            table.uniform_(-spread, spread)
    return field


def precision_twin(field: NeRFField, precision: str) -> NeRFField:
    """The same field (same weights) with its MLPs in another precision."""
    twin = NeRFField(replace(field.config, mlp_precision=precision))
    twin.load_state_dict(field.state_dict())
    return twin
