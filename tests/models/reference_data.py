"""Helpers for the model tests: the reference parity fixtures in tests/data."""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

DATA = Path(__file__).resolve().parents[1] / 'data' / 'reference'
FIXTURES = ('ref_small_code', 'ref_small_paper')


def load_fixture(name: str) -> dict[str, Any]:
    """Return tensors (``state`` as a reference state dict) and parsed metadata."""
    with safe_open(str(DATA / f'{name}.safetensors'), 'pt') as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    state = {k[6:]: v for k, v in tensors.items() if k.startswith('state.')}
    out = {k: v for k, v in tensors.items() if not k.startswith('state.')}
    out['state'] = state
    out['meta'] = meta
    return out


def encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder subset of a reference state dict (timm names)."""
    decoder = ('decoder', 'fpn', 'fcn', 'mask_token')
    return {k: v for k, v in state.items() if not k.startswith(decoder)}
