"""Train the bundled example: a small DS-CNN on scikit-learn's 8x8 digits (CPU, ~20 s).

Writes, next to this file:
  digits_dscnn.pt     TorchScript model, input (1, 1, 8, 8) float32 in [0, 1], 10 logits
  digits_calib.npy    (256, 1, 8, 8) float32 calibration batch from the training split
  digits_test.npz     the held-out split: x (450, 1, 8, 8) float32, y (450,) labels

Regenerate with `python examples/train_digits.py`; then
`tinyds generate examples/digits_dscnn.pt --mcu stm32f4 --calib examples/digits_calib.npy -o out/`
and `tinyds eval examples/digits_dscnn.pt --data examples/digits_test.npz --out out/`.
The split is fixed (`load_split`), so the held-out test set can be rebuilt anywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
CALIB_SAMPLES = 256


def load_split():
    """(x_train, x_test, y_train, y_test): NCHW float32 in [0, 1], fixed 75/25 split."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return train_test_split(x, digits.target, test_size=0.25, random_state=SEED,
                            stratify=digits.target)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, each followed by BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(self.bn2(self.pointwise(x)))


class DigitsDSCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(DepthwiseSeparableConv(16, 32, 2), DepthwiseSeparableConv(32, 32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def train(epochs: int = 60) -> tuple[nn.Module, float]:
    torch.manual_seed(SEED)
    x_tr, x_te, y_tr, y_te = load_split()
    x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    model = DigitsDSCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean()
    return model, float(acc)


def main() -> None:
    model, acc = train()
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 1, 8, 8)), HERE / "digits_dscnn.pt")
    x_tr, x_te, _, y_te = load_split()
    calib = x_tr[np.random.default_rng(SEED).permutation(len(x_tr))[:CALIB_SAMPLES]]
    np.save(HERE / "digits_calib.npy", calib.astype(np.float32))
    np.savez(HERE / "digits_test.npz", x=x_te.astype(np.float32), y=y_te.astype(np.int64))
    print(f"test accuracy {100 * acc:.2f}%; wrote {HERE / 'digits_dscnn.pt'} and "
          f"{HERE / 'digits_calib.npy'} {calib.shape}")


if __name__ == "__main__":
    main()
