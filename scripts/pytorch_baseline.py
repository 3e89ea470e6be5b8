#!/usr/bin/env python3
"""PyTorch (CPU) timings of the networks in benches/train.rs, for a same-machine comparison.

Not part of the crate or its CI: run by hand in an environment with torch installed
(`python3 -m venv env && env/bin/pip install torch`), on an otherwise idle machine:

    env/bin/python scripts/pytorch_baseline.py [--mnist ../shared/data/mnist]

Prints the median ms/step of one training step (forward, backward, optimizer) for each network
with 1 and 2 threads, and optionally one MNIST epoch (784-512-512-10, Adam 1e-3, batch 128).
Adam runs twice: PyTorch's default implementation and `Adam(fused=True)`, the fastest a user
can pick on the CPU (compare against that one).
"""
import argparse
import gzip
import os
import statistics
import time

import torch
import torch.nn as nn


def mlp(dims, act=nn.ReLU):
    layers = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def time_steps(model, opt, loss_fn, x, y, min_seconds=2.0):
    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < 10:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def networks():
    g = torch.Generator().manual_seed(0)
    def data(batch, d, out, classes):
        x = torch.rand(batch, d, generator=g) * 2 - 1
        if classes:
            y = torch.randint(0, out, (batch,), generator=g)
        else:
            y = torch.rand(batch, out, generator=g) * 2 - 1
        return x, y
    ce, mse = nn.CrossEntropyLoss(), nn.MSELoss()
    yield "mnist_784-512-512-10_adam_b128", mlp([784, 512, 512, 10]), "adam", ce, data(128, 784, 10, True)
    yield "mnist_784-512-512-10_adam_fused_b128", mlp([784, 512, 512, 10]), "adam_fused", ce, data(128, 784, 10, True)
    yield "small_32-4x64-10_sgd_b32", mlp([32, 64, 64, 64, 64, 10]), "sgd", ce, data(32, 32, 10, True)
    yield "deep_256-8x256-1_momentum_b256", mlp([256] * 9 + [1]), "momentum", mse, data(256, 256, 1, False)
    yield "k1024_l8_b256", mlp([1024] * 10), "momentum", mse, data(256, 1024, 1024, False)


def optimizer(kind, params):
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    if kind == "adam_fused":
        return torch.optim.Adam(params, lr=1e-3, fused=True)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def mnist_epochs(directory, threads, epochs=1, seed=0, fused=False):
    """Trains the MNIST net for `epochs` epochs; returns [(seconds, test accuracy)] per epoch."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x = read_idx(os.path.join(directory, "train-images-idx3-ubyte.gz")).reshape(-1, 784).float() / 255
    y = read_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz")).long()
    xt = read_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784).float() / 255
    yt = read_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz")).long()
    model = mlp([784, 512, 512, 10])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        start = time.perf_counter()
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            acc = (model(xt).argmax(1) == yt).float().mean().item()
        rows.append((seconds, acc))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", help="directory with the MNIST IDX files")
    ap.add_argument("--epochs", type=int, default=1, help="MNIST epochs (accuracy after each)")
    ap.add_argument("--seeds", type=int, default=1, help="MNIST runs with seeds 0..N-1 (2 threads)")
    ap.add_argument("--mnist-only", action="store_true", help="skip the step timings")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}")
    if args.mnist_only:
        for seed in range(args.seeds):
            rows = mnist_epochs(args.mnist, 2, args.epochs, seed)
            accs = " ".join(f"{100 * a:.2f}" for _, a in rows)
            print(f"MNIST seed {seed}, 2 threads: test accuracy per epoch (%): {accs}", flush=True)
        return
    print("| network | threads | ms/step |")
    print("|---|---:|---:|")
    for name, model, kind, loss_fn, (x, y) in networks():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            opt = optimizer(kind, model.parameters())
            ms = 1e3 * time_steps(model, opt, loss_fn, x, y)
            print(f"| {name} | {threads} | {ms:.3f} |", flush=True)
    if args.mnist:
        for threads in (1, 2):
            for fused in (False, True):
                rows = mnist_epochs(args.mnist, threads, args.epochs, fused=fused)
                adam = "Adam(fused=True)" if fused else "Adam (default)"
                for e, (s, acc) in enumerate(rows, 1):
                    print(f"MNIST epoch {e}, {threads} thread(s), {adam}: {s:.2f} s, "
                          f"test accuracy {100 * acc:.2f} %", flush=True)


if __name__ == "__main__":
    main()
