"""Why GPU tasks need deterministic settings: float32 `scatter_add_` on a GPU adds in whatever order its
atomic operations land, so repeated runs give different bits; with deterministic algorithms on they agree.

Usage: python3 scatter_add.py [--runs N]. Prints how many distinct sha256 hashes N runs gave, each way.
"""

import argparse
import hashlib

import torch


def run(deterministic: bool, values: torch.Tensor, index: torch.Tensor) -> str:
    torch.use_deterministic_algorithms(deterministic)
    out = torch.zeros(1000, device=values.device).scatter_add_(0, index, values)
    return hashlib.sha256(out.cpu().numpy().tobytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(7)
    values = torch.randn(2_000_000, generator=generator).cuda()
    index = torch.randint(0, 1000, (2_000_000,), generator=generator).cuda()
    for deterministic in (False, True):
        hashes = {run(deterministic, values, index) for _ in range(args.runs)}
        print(f"scatter_add_ float32, deterministic={deterministic}: {len(hashes)} distinct hash(es) in "
              f"{args.runs} runs")


if __name__ == "__main__":
    main()
