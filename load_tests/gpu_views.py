"""A torch model on CUDA guarded end to end: the input stays on the GPU, descriptors are computed there.

    python load_tests/gpu_views.py [--batch 64] [--size 224] [--calls 200]

Needs torch with CUDA (prints why and exits 0 otherwise). It builds an array-view profile from
batches that live on the GPU, guards a small convolutional model, and prints:

- the descriptor cost per sample on the GPU (the view alone, CUDA-synchronised), p50 and p99;
- the guard's overhead per call around the model (guarded minus bare), p50;
- that the model received the very tensor the caller passed (same object, same device, same
  data pointer), and that only the (n, k) descriptor matrix was copied to the host;
- the edge-case verdicts on clean batches, blank images and inverted images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_views: torch is not installed here; nothing to check (pip install torch on a GPU machine)")
        return 0
    if not torch.cuda.is_available():
        print("gpu_views: no CUDA device visible to torch; nothing to check")
        return 0
    from guarded_serving import Guard
    from guarded_serving.edge_cases import build_profile
    from guarded_serving.views import ArrayView

    dev = torch.device("cuda")
    torch.manual_seed(0)
    n, s = args.batch, args.size

    def batch() -> "torch.Tensor":
        base = torch.rand(n, 3, s, s, device=dev) * 0.5 + 0.25
        return (base + 0.05 * torch.randn_like(base)).clamp(0, 1)

    train = torch.cat([batch() for _ in range(20)])
    view = ArrayView().fit(train)
    prof = build_profile(train, view=view)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, stride=2), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).to(dev)
    seen = []

    def predict(images: "torch.Tensor") -> "torch.Tensor":
        seen.append((id(images), images.device, images.data_ptr()))
        with torch.no_grad():
            return model(images).softmax(1)

    guard = Guard(name="gpu_vision", profile=prof, operational=False)
    guarded = guard.wrap(predict)

    def timed(fn, x) -> np.ndarray:
        out = []
        for _ in range(args.calls):
            torch.cuda.synchronize()
            t0 = time.perf_counter_ns()
            fn(x)
            torch.cuda.synchronize()
            out.append((time.perf_counter_ns() - t0) / 1e3)
        return np.array(out)

    x = batch()
    for _ in range(20):
        guarded(x)
        view.transform(x)
    desc = timed(view.transform, x) / n
    bare = timed(predict, x)
    wrapped = timed(guarded, x)
    guarded(x)
    same = seen[-1] == (id(x), x.device, x.data_ptr())
    print(f"device: {torch.cuda.get_device_name(0)}; batch {n} x 3 x {s} x {s} float32")
    print(f"descriptor cost per sample on the GPU: p50 {np.percentile(desc, 50):.2f} us, p99 {np.percentile(desc, 99):.2f} us")
    print(f"guard overhead per call (guarded - bare): p50 {np.percentile(wrapped, 50) - np.percentile(bare, 50):.1f} us "
          f"(bare p50 {np.percentile(bare, 50):.1f} us)")
    print(f"model got the caller's tensor untouched (same object, device, data pointer): {same}; "
          f"host copy per call: the {n} x {len(view.feature_names_)} descriptor matrix only")
    before = guard.stats()["edge_cases"]["rows_flagged"]
    guarded(batch())
    clean = guard.stats()["edge_cases"]["rows_flagged"] - before
    guarded(torch.zeros(8, 3, s, s, device=dev))
    blank = guard.stats()["edge_cases"]["rows_flagged"] - before - clean
    guarded(1.0 - batch()[:8] * 0.2)
    odd = guard.stats()["edge_cases"]["rows_flagged"] - before - clean - blank
    print(f"edge cases flagged: clean {clean}/{n}, blank {blank}/8, washed-out {odd}/8")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
