"""GPU example: a few training steps of a small PyTorch MLP on the attached GPU, written so that replicas on
the same GPU model and CUDA major version produce the same bytes.

What makes it reproducible (docs/result-hash.md, "GPU tasks"): a fixed seed; inputs generated on the CPU and
then copied to the device (so they do not depend on the GPU's random number generator); deterministic
algorithms on (`torch.use_deterministic_algorithms(True)`, which needs CUBLAS_WORKSPACE_CONFIG, set by the
sandbox); cuDNN autotuning off; TF32 off. Outputs: /out/weights.bin (the trained parameters, float32, in
state_dict order) and /out/loss.json (the loss after each step, as exact float hex). The device name goes to
stdout only, which is not part of the result unless the spec asks for it.

Usage: python3 train_step.py [--device cuda|cpu] [--out DIR] [--steps N]. With --device cuda (the default)
and no GPU visible it exits 2 rather than fall back to the CPU, whose results differ.
"""

import argparse
import json
import os
import sys

import torch

SEED = 20261204
FEATURES, HIDDEN, CLASSES, BATCH = 64, 256, 10, 512


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default="/out")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device is visible: the sandbox attached no GPU (or the driver is missing)",
              file=sys.stderr)
        return 2
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(SEED)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(BATCH, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, CLASSES))  # initialised on the CPU from SEED
    model.to(device)
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(args.steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach().cpu()).hex())
    os.makedirs(args.out, exist_ok=True)
    weights = b"".join(t.detach().cpu().contiguous().numpy().tobytes() for t in model.state_dict().values())
    with open(os.path.join(args.out, "weights.bin"), "wb") as fh:
        fh.write(weights)
    with open(os.path.join(args.out, "loss.json"), "w") as fh:
        json.dump({"steps": args.steps, "loss": losses}, fh, indent=1)
        fh.write("\n")
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"device {name}, torch {torch.__version__}, cuda {torch.version.cuda}, final loss "
          f"{float.fromhex(losses[-1]):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
