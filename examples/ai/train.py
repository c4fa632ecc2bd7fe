"""Sample AI job: train a 2-layer MLP (tanh hidden layer, sigmoid output) on /in/data/moons.csv.

Runs inside the hashgrid/python-numpy image. Deterministic by construction: a fixed seed, full-batch gradient
descent for a fixed number of steps, float64, one BLAS thread (OMP/OPENBLAS_NUM_THREADS=1 in the spec), no
clock and no randomness beyond the seeded generator. Writes /out/model.json (weights) and /out/metrics.json.
Published numbers are rounded to 9 significant digits: on one machine every bit is identical anyway, and the
rounding keeps the result hash equal on CPUs whose vectorised exp/tanh differ in the last ulp.
"""

import json
import os
import sys

import numpy as np

SEED = 7
STEPS = 400
HIDDEN = 16
LEARNING_RATE = 0.5
DIGITS = 9


def rounded(values: np.ndarray) -> list:
    return [float(f"{v:.{DIGITS}g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def main() -> int:
    data = np.loadtxt("/in/data/moons.csv", delimiter=",", skiprows=1, dtype=np.float64)
    features, labels = data[:, :2], data[:, 2:3]
    mean, std = features.mean(axis=0), features.std(axis=0)
    x = (features - mean) / std
    rng = np.random.default_rng(SEED)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(2.0), size=(2, HIDDEN))
    b1 = np.zeros((1, HIDDEN))
    w2 = rng.normal(0.0, 1.0 / np.sqrt(HIDDEN), size=(HIDDEN, 1))
    b2 = np.zeros((1, 1))
    n = float(len(x))
    curve = []
    for step in range(1, STEPS + 1):
        hidden = np.tanh(x @ w1 + b1)
        prob = 1.0 / (1.0 + np.exp(-(hidden @ w2 + b2)))
        eps = 1e-12
        loss = -np.mean(labels * np.log(prob + eps) + (1 - labels) * np.log(1 - prob + eps))
        grad_out = (prob - labels) / n
        grad_w2 = hidden.T @ grad_out
        grad_b2 = grad_out.sum(axis=0, keepdims=True)
        grad_hidden = (grad_out @ w2.T) * (1.0 - hidden**2)
        grad_w1 = x.T @ grad_hidden
        grad_b1 = grad_hidden.sum(axis=0, keepdims=True)
        w1 -= LEARNING_RATE * grad_w1
        b1 -= LEARNING_RATE * grad_b1
        w2 -= LEARNING_RATE * grad_w2
        b2 -= LEARNING_RATE * grad_b2
        if step % 50 == 0 or step == 1:
            curve.append({"step": step, "loss": rounded([loss])[0]})
    hidden = np.tanh(x @ w1 + b1)
    prob = 1.0 / (1.0 + np.exp(-(hidden @ w2 + b2)))
    accuracy = float(np.mean((prob > 0.5) == (labels > 0.5)))
    model = {"architecture": f"2-{HIDDEN}-1 tanh/sigmoid",
             "input_mean": rounded(mean), "input_std": rounded(std),
             "w1": rounded(w1), "b1": rounded(b1), "w2": rounded(w2), "b2": rounded(b2)}
    metrics = {"seed": SEED, "steps": STEPS, "learning_rate": LEARNING_RATE, "examples": int(n),
               "final_loss": curve[-1]["loss"], "accuracy": accuracy, "loss_curve": curve}
    with open("/out/model.json", "w") as handle:
        json.dump(model, handle, sort_keys=True)
        handle.write("\n")
    with open("/out/metrics.json", "w") as handle:
        json.dump(metrics, handle, sort_keys=True, indent=1)
        handle.write("\n")
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"trained {STEPS} steps on {int(n)} examples (threads={threads}): loss {metrics['final_loss']}, "
          f"accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
