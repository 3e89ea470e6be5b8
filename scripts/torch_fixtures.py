#!/usr/bin/env python3
"""Writes the PyTorch-made model files that tests/torch_files.rs loads.

Usage: torch_fixtures.py OUTDIR   (needs torch, safetensors and numpy)

For each case NAME it writes
  NAME.safetensors     model.state_dict() saved with safetensors.torch.save_file
                       and nothing else: no metadata, plain nn.Sequential keys
  NAME.io.safetensors  x (a batch of inputs) and y = model.eval()(x), float32

The committed copies in tests/fixtures/torch were made by this script; CI
regenerates them with a fresh torch when one can be installed and runs the
same test on those too.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from torch import nn


def randomise_norms(model):
    """Non-trivial γ, β and running statistics, as a trained model has."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(16, model[0].in_features) * 2.0 + 0.5)
    model.eval()


def cases():
    torch.manual_seed(0)
    yield "linear_relu", nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)), None
    yield "no_bias_batch_norm", nn.Sequential(
        nn.Linear(5, 8, bias=False),
        nn.BatchNorm1d(8),
        nn.Tanh(),
        nn.Linear(8, 4),
        nn.BatchNorm1d(4, affine=False),
        nn.Sigmoid(),
        nn.Linear(4, 2, bias=False),
    ), None
    yield "layer_norm_dropout", nn.Sequential(
        nn.Linear(6, 7),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(7, 7),
        nn.LayerNorm(7),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(7, 2),
    ), None
    yield "gelu_tanh_plain_layer_norm", nn.Sequential(
        nn.Linear(4, 6),
        nn.GELU(approximate="tanh"),
        nn.LayerNorm(6, elementwise_affine=False),
        nn.Linear(6, 1),
    ), None
    yield "gelu_exact", nn.Sequential(
        nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 6), nn.GELU(), nn.Linear(6, 2)
    ), None
    for dtype, name in [(torch.float16, "f16"), (torch.bfloat16, "bf16"), (torch.float64, "f64")]:
        yield "linear_relu_" + name, nn.Sequential(
            nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)
        ), dtype


def main(out):
    os.makedirs(out, exist_ok=True)
    for name, model, dtype in cases():
        randomise_norms(model)
        x = torch.randn(7, model[0].in_features)
        state = model.state_dict()
        if dtype is not None:
            # Saved in `dtype`; the reference output is the f32 model with the
            # weights rounded to it, which is what loading converts to.
            state = {k: v.to(dtype) for k, v in state.items()}
            model.load_state_dict({k: v.float() for k, v in state.items()})
        with torch.no_grad():
            y = model(x)
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, name + ".safetensors"))
        save_file({"x": x.contiguous(), "y": y.contiguous()}, os.path.join(out, name + ".io.safetensors"))
        print(name, {k: list(v.shape) for k, v in state.items()})


if __name__ == "__main__":
    main(sys.argv[1])
