"""The PyTorch test-model zoo: small nets covering every op the frontends lower.

`build(name)` is deterministic (seeded) and returns (model in eval mode, example
input (1, C, H, W)); `inputs(name, n)` draws inputs like those the model was
set up on (standard normal). BatchNorm running stats come from a pass over such
inputs and are then perturbed, so they are far from identity (BN folding is
really exercised) yet keep activations well scaled; each Linear reads the main
directions of its input features with zero-mean logits, so the predicted class
depends on the input (the quantization tests need classes to vary).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class DepthwiseSeparableConv(nn.Module):
    """The seed's block: depthwise conv (groups=in_channels) then 1x1 pointwise, both with bias."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride,
                                   padding=padding, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def _conv_bn(cin, cout, k, stride=1, padding=0, groups=1, act=nn.ReLU, bias=False):
    layers = [nn.Conv2d(cin, cout, k, stride, padding, groups=groups, bias=bias), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class DSStack(nn.Module):
    """The seed's DepthwiseSeparableConv stacked, with ReLU between blocks."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            DepthwiseSeparableConv(3, 16), nn.ReLU(),
            DepthwiseSeparableConv(16, 32, stride=2), nn.ReLU(),
            DepthwiseSeparableConv(32, 32, kernel_size=5, padding=2), nn.ReLU(),
            DepthwiseSeparableConv(32, 64, stride=2), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DSCNN(nn.Module):
    """KWS DS-CNN (MLPerf Tiny shape): 10x4 stride-2 conv, 4 DS blocks, global avg pool, FC 12."""

    def __init__(self, num_classes=12, width=64):
        super().__init__()
        self.conv1 = _conv_bn(1, width, (10, 4), stride=2, padding=(5, 1), bias=True)
        self.blocks = nn.Sequential(*[nn.Sequential(
            _conv_bn(width, width, 3, padding=1, groups=width),   # depthwise
            _conv_bn(width, width, 1),                            # pointwise
        ) for _ in range(4)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.pool(self.blocks(self.conv1(x)))
        return self.fc(x.view(x.size(0), -1))


class MobileNetV1(nn.Module):
    """MobileNetV1 with width multiplier alpha (0.25 -> 8..256 channels), ReLU6, 96x96x3 input."""

    CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, alpha=0.25, num_classes=2):
        super().__init__()
        c = int(32 * alpha)
        layers = [_conv_bn(3, c, 3, 2, 1, act=nn.ReLU6)]
        for out, s in self.CFG:
            o = int(out * alpha)
            layers += [_conv_bn(c, c, 3, s, 1, groups=c, act=nn.ReLU6), _conv_bn(c, o, 1, act=nn.ReLU6)]
            c = o
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _conv_bn(cin, hid, 1, act=nn.ReLU6),
            _conv_bn(hid, hid, 3, stride, 1, groups=hid, act=nn.ReLU6),
            _conv_bn(hid, cout, 1, act=None),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2-style: inverted residuals with adds, spatial mean, Linear; 64x64x3 input."""

    def __init__(self, num_classes=10):
        super().__init__()
        cfg = [(16, 1, 1), (24, 2, 4), (24, 1, 4), (32, 2, 4), (32, 1, 4), (32, 1, 4), (48, 2, 4), (48, 1, 4)]
        layers, c = [_conv_bn(3, 16, 3, 2, 1, act=nn.ReLU6)], 16
        for out, s, e in cfg:
            layers.append(InvertedResidual(c, out, s, e))
            c = out
        layers.append(_conv_bn(c, 128, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean([2, 3]))


class OpMix(nn.Module):
    """The corner cases: non-square kernels, no-bias convs, dilation, channel multiplier 2,
    MaxPool, AvgPool with counted padding, 'same' padding on an even kernel, a strided
    non-square conv, flatten of an HxWxC map into a Linear (NCHW order), keepdim mean,
    adds of flat tensors, Linear without bias, softmax."""

    def __init__(self, num_classes=6):
        super().__init__()
        self.stem = _conv_bn(3, 8, (3, 5), padding=(1, 2))                             # no bias
        self.pool1 = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8)                  # multiplier 2
        self.act1 = nn.ReLU6()
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)                                # count_include_pad
        self.same = nn.Conv2d(16, 16, 4, padding="same")                               # asymmetric
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.ReLU(inplace=True)
        self.dil = nn.Conv2d(16, 12, (3, 2), stride=(2, 1), dilation=(1, 2), bias=False)
        self.avg2 = nn.AvgPool2d(2, stride=2, padding=1, count_include_pad=False)
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc_flat = nn.Linear(12 * 2 * 3, num_classes)
        self.fc_mean = nn.Linear(12, num_classes, bias=False)

    def forward(self, x):
        x = self.pool1(self.stem(x))
        x = self.avg(self.act1(self.dw(x)))
        x = self.act2(self.bn2(self.same(x)))
        x = self.pool2(self.avg2(self.dil(x)))
        a = self.fc_flat(torch.flatten(x, 1))
        b = self.fc_mean(x.mean((2, 3), keepdim=True).flatten(1))
        return F.softmax(a + b, dim=1)


class ActMix(nn.Module):
    """The element-wise activations: hardswish after a stem and a pointwise conv, leaky ReLU
    after a depthwise conv, a per-channel PReLU, and a sigmoid on the logits (multi-label)."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.stem = _conv_bn(3, 12, 3, stride=2, padding=1, act=nn.Hardswish)
        self.dw = _conv_bn(12, 12, 3, padding=1, groups=12, act=lambda: nn.LeakyReLU(0.1))
        self.pw = _conv_bn(12, 24, 1, act=nn.Hardswish)
        self.pw2 = _conv_bn(24, 24, 1, act=lambda: nn.PReLU(24))
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.pw2(self.pw(self.dw(self.stem(x))))
        return torch.sigmoid(self.fc(x.mean((2, 3))))


class SqueezeExcite(nn.Module):
    """MobileNetV3's SE: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> hardsigmoid -> scale x."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.relu(self.reduce(x.mean((2, 3), keepdim=True)))
        return x * F.hardsigmoid(self.expand(s))


class MNV3Block(nn.Module):
    """Inverted residual with optional SE and hardswish, residual add when shapes allow."""

    def __init__(self, cin, expand, cout, k, stride, se, act):
        super().__init__()
        self.expand = _conv_bn(cin, expand, 1, act=act) if expand != cin else nn.Identity()
        self.dw = _conv_bn(expand, expand, k, stride, k // 2, groups=expand, act=act)
        self.se = SqueezeExcite(expand, max(8, expand // 4)) if se else nn.Identity()
        self.project = _conv_bn(expand, cout, 1, act=nn.Identity)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3Small(nn.Module):
    """A narrow MobileNetV3-small: hardswish stem, SE blocks (hardsigmoid gating), ReLU and
    hardswish blocks, a hardswish head."""

    def __init__(self, num_classes=6):
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, 1, act=nn.Hardswish)
        self.blocks = nn.Sequential(
            MNV3Block(16, 16, 16, 3, 2, True, nn.ReLU),
            MNV3Block(16, 48, 24, 3, 2, False, nn.ReLU),
            MNV3Block(24, 56, 24, 3, 1, False, nn.ReLU),
            MNV3Block(24, 64, 32, 5, 2, True, nn.Hardswish),
            MNV3Block(32, 96, 32, 5, 1, True, nn.Hardswish))
        self.head = _conv_bn(32, 96, 1, act=nn.Hardswish)
        self.fc = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class Conv1dKWS(nn.Module):
    """A keyword-spotting net on (N, 10 MFCCs, 49 frames): Conv1d stem, depthwise-separable
    Conv1d blocks, a max pool, a global mean over time and a Linear."""

    def __init__(self, num_classes=12):
        super().__init__()
        def conv_bn(cin, cout, k, stride=1, groups=1):
            return [nn.Conv1d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                    nn.BatchNorm1d(cout), nn.ReLU()]
        self.features = nn.Sequential(
            *conv_bn(10, 32, 5, 2), *conv_bn(32, 32, 3, groups=32), *conv_bn(32, 48, 1),
            nn.MaxPool1d(2), *conv_bn(48, 48, 3, groups=48), *conv_bn(48, 64, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).mean(2))


def sample_inputs(shape, n: int, seed: int = 0) -> torch.Tensor:
    """n standard-normal inputs of `shape` (batch replaced by n), seeded."""
    return torch.randn((n,) + tuple(shape[1:]), generator=torch.Generator().manual_seed(seed))


def inputs(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """n inputs for zoo model `name`, drawn like the data its BN statistics came from."""
    return sample_inputs(SHAPES[name], n, seed)


def _randomize(model: nn.Module, shape, seed: int) -> nn.Module:
    """Seeded weights, then BN stats from real activations, perturbed (so BN is not identity)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=1.0)
            if m.bias is not None:
                nn.init.uniform_(m.bias, -0.2, 0.2)
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.reset_running_stats()
            m.momentum = None                       # cumulative average over the batches below
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    model.train()
    with torch.no_grad():
        for i in range(4):
            model(sample_inputs(shape, 16, seed=seed * 100 + i))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            c = m.num_features
            m.running_mean.add_(0.1 * torch.randn(c) * m.running_var.sqrt())
            m.running_var.mul_(torch.empty(c).uniform_(0.7, 1.4))
            m.momentum = 0.1
    model.eval()
    for lin in [m for m in model.modules() if isinstance(m, nn.Linear)]:
        _center(model, lin, shape)
    return model


@torch.no_grad()
def _center(model, lin: nn.Linear, shape):
    """Make a Linear read the principal directions of its input features, like a trained head:
    zero-mean logits of std ~2 that follow the strongest input-dependent variation (so the
    class depends on the input and on more than quantization noise)."""
    seen = []
    hook = lin.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    model(sample_inputs(shape, 256, seed=12345))
    hook.remove()
    x = seen[0]
    mu = x.mean(0)
    _, _, vt = torch.linalg.svd(x - mu, full_matrices=False)
    k = min(lin.out_features, vt.shape[0])
    w = torch.zeros_like(lin.weight)
    w[:k] = vt[:k] * torch.sign(torch.randn(k, 1))
    w[k:] = torch.randn(lin.out_features - k, lin.in_features) / lin.in_features ** 0.5
    if lin.bias is None:       # no bias to absorb the mean: remove the mean direction instead
        w -= torch.outer(w @ mu, mu) / (mu @ mu).clamp_min(1e-12)
    w *= 2.0 / ((x - mu) @ w.T).std(0, keepdim=True).T.clamp_min(1e-12)
    lin.weight.copy_(w)
    if lin.bias is not None:
        lin.bias.copy_(-(w @ mu) + 0.1 * torch.randn(lin.out_features))


SHAPES = {"ds_stack": (1, 3, 32, 32), "dscnn": (1, 1, 49, 10), "mobilenet_v1": (1, 3, 96, 96),
          "mobilenet_v2": (1, 3, 64, 64), "opmix": (1, 3, 24, 20), "act_mix": (1, 3, 24, 24),
          "mobilenet_v3": (1, 3, 64, 64), "conv1d_kws": (1, 10, 49)}
BUILDERS = {"ds_stack": DSStack, "dscnn": DSCNN, "mobilenet_v1": MobileNetV1,
            "mobilenet_v2": MobileNetV2, "opmix": OpMix, "act_mix": ActMix,
            "mobilenet_v3": MobileNetV3Small, "conv1d_kws": Conv1dKWS}
NAMES = tuple(BUILDERS)


def build(name: str, seed: int = 0):
    """(model in eval mode, example input (1, C, H, W)) for a zoo entry; a fresh copy each call."""
    model, x = _built(name, seed)
    return copy.deepcopy(model), x.clone()


@functools.lru_cache(maxsize=None)
def _built(name, seed):
    shape = SHAPES[name]
    model = _randomize(BUILDERS[name](), shape, seed)
    torch.manual_seed(seed + 1000)
    return model, torch.randn(shape)


def save_torchscript(model, example, path, scripted=False) -> Path:
    m = torch.jit.script(model) if scripted else torch.jit.trace(model, example, check_trace=False)
    m.save(str(path))
    return Path(path)


def save_pt2(model, example, path) -> Path:
    torch.export.save(torch.export.export(model, (example,)), str(path))
    return Path(path)


def save_all(name: str, tmp_dir, seed: int = 0) -> dict:
    """Save one zoo model as traced .pt, scripted .pt and .pt2 in tmp_dir; returns paths + model."""
    model, x = build(name, seed)
    tmp_dir = Path(tmp_dir)
    return {
        "model": model, "input": x,
        "traced": save_torchscript(model, x, tmp_dir / f"{name}_traced.pt"),
        "scripted": save_torchscript(model, x, tmp_dir / f"{name}_scripted.pt", scripted=True),
        "pt2": save_pt2(model, x, tmp_dir / f"{name}.pt2"),
    }


class SyntheticTask:
    """A learnable classification task for a zoo input shape: each class is a smooth random
    pattern (a low-resolution field upsampled), drawn at a random amplitude under heavy noise.
    Nets trained on it have real class margins, the way deployed models do, and still make
    mistakes (the noise is set so accuracy stays below 100%): the honest ground on which to
    judge int8 agreement, which a random net's near-tied logits cannot give."""

    def __init__(self, shape, classes: int, seed: int = 0, noise: float = 2.5):
        c, h, w = shape[1:]
        g = torch.Generator().manual_seed(seed)
        low = torch.randn((classes, c, max(2, h // 6), max(2, w // 6)), generator=g)
        self.prototypes = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        self.noise = noise

    def draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, self.prototypes.shape[0], (n,), generator=g)
        amplitude = 0.5 + torch.rand((n, 1, 1, 1), generator=g)
        noise = torch.randn((n,) + self.prototypes.shape[1:], generator=g)
        return self.prototypes[y] * amplitude + self.noise * noise, y


# (training steps, task noise) per net: enough steps that it learns, noise such that it still
# errs (float accuracy ~85-97% on held-out draws), so agreement is judged near real boundaries.
TRAINING = {"ds_stack": (400, 2.5), "dscnn": (150, 2.5), "mobilenet_v1": (150, 2.5),
            "mobilenet_v2": (150, 4.0)}


def trained(name: str, seed: int = 0):
    """(model trained briefly on its SyntheticTask, the task): a fresh copy each call."""
    model, task = _trained(name, seed)
    return copy.deepcopy(model), task


@functools.lru_cache(maxsize=None)
def _trained(name, seed):
    torch.manual_seed(seed)
    model = BUILDERS[name]()
    classes = [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features
    steps, noise = TRAINING[name]
    task = SyntheticTask(SHAPES[name], classes, seed, noise)

    def loss_at(step):
        x, y = task.draw(32, seed=1_000_000 + step)
        return F.cross_entropy(model(x), y)
    return _fit(model, steps, loss_at), task


def _fit(model: nn.Module, steps: int, loss_at) -> nn.Module:
    """Adam over `steps` batches, loss_at(step) each batch's loss; one thread: deterministic
    sums, and no thread thrash on a loaded 2-core box."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(steps):
            loss = loss_at(step)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


class TwoHead(nn.Module):
    """Two inputs, two outputs: a DS-CNN trunk on an image (N, 1, 16, 16) with a
    classification head, and a regression head reading the trunk's features together
    with a second input, a 4-vector of side information."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.trunk = nn.Sequential(
            _conv_bn(1, 16, 3, stride=2, padding=1),
            _conv_bn(16, 16, 3, padding=1, groups=16), _conv_bn(16, 32, 1),
            _conv_bn(32, 32, 3, padding=1, groups=32), _conv_bn(32, 32, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classify = nn.Linear(32, classes)
        self.features = nn.Linear(32, 16)
        self.side = nn.Linear(4, 16)
        self.regress = nn.Linear(16, 2)

    def forward(self, image, side):
        f = self.trunk(image)
        return self.classify(f), self.regress(F.relu(self.features(f) + self.side(side)))


class TwoHeadTask:
    """TwoHead's task: the class of a SyntheticTask image; the regression targets are the
    image's pattern amplitude and the mean of the side vector's first two values, so each
    output depends on the input it should (the second on both)."""

    def __init__(self, seed: int = 0):
        self.images = SyntheticTask((1, 1, 16, 16), 3, seed, noise=1.5)

    def draw(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=g)
        amplitude = 0.5 + torch.rand((n, 1, 1, 1), generator=g)
        image = self.images.prototypes[y] * amplitude + self.images.noise * torch.randn(
            (n, 1, 16, 16), generator=g)
        side = torch.randn((n, 4), generator=g)
        target = torch.stack([amplitude.reshape(-1), side[:, :2].mean(dim=1)], dim=1)
        return (image, side), (y, target)


def trained_two_head(seed: int = 0):
    """(TwoHead trained briefly on TwoHeadTask, the task): a fresh copy each call."""
    model, task = _trained_two_head(seed)
    return copy.deepcopy(model), task


@functools.lru_cache(maxsize=None)
def _trained_two_head(seed):
    torch.manual_seed(seed)
    model, task = TwoHead(), TwoHeadTask(seed)

    def loss_at(step):
        (image, side), (y, target) = task.draw(64, seed=2_000_000 + step)
        logits, reg = model(image, side)
        return F.cross_entropy(logits, y) + F.mse_loss(reg, target) * 4
    return _fit(model, 300, loss_at), task
