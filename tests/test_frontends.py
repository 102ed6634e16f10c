"""PyTorch frontends: every zoo model through every path matches PyTorch, the
semantic traps lower correctly, and bad input gives one clear TinydsError."""
from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tinyds import calib, float_ref, frontends, passes
from tinyds.errors import TinydsError

import models

warnings.filterwarnings("ignore", message=".*padding='same'.*")
PATHS = ("traced", "scripted", "pt2", "module")


def run_ir(g, x: torch.Tensor) -> np.ndarray:
    return float_ref.run(g, calib.for_graph(g, x.numpy()))[g.outputs[0]]


def assert_close(g, model, x, rtol=1e-4):
    with torch.no_grad():
        want = model(x).numpy()
    got = run_ir(g, x)
    got = got.transpose(0, 3, 1, 2) if got.ndim == 4 else got     # IR feature maps are NHWC
    if want.ndim == 3:                                             # (N, 1, L, C) -> (N, C, L)
        got = got[:, :, 0, :]
    assert got.shape == want.shape
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= rtol, f"max relative error {err:.2e}"
    return err


@pytest.fixture(scope="module", params=models.NAMES)
def saved(request, zoo_files):
    return zoo_files(request.param)


def load_via(saved, path):
    x = saved["input"]
    if path == "module":
        return frontends.from_module(saved["model"], x)
    return frontends.load(saved[path], input_shape=tuple(x.shape) if path == "scripted" else None)


@pytest.fixture(scope="module")
def loaded(saved) -> dict:
    """The model's IR through every path, loaded once for the tests below."""
    return {path: load_via(saved, path) for path in PATHS}


@pytest.mark.parametrize("path", PATHS)
def test_zoo_matches_torch(saved, loaded, path):
    g = loaded[path]
    shape = tuple(saved["input"].shape)
    if len(shape) == 3:                                    # Conv1d: (N, C, L) is (N, 1, L, C)
        assert g.source_layout == "NCL" and g.input.shape == (1, 1, shape[2], shape[1])
    else:
        assert g.source_layout == "NCHW"
        assert g.input.shape == tuple(np.array(shape)[[0, 2, 3, 1]])
    torch.manual_seed(7)
    x = torch.randn(3, *saved["input"].shape[1:])
    assert_close(g, saved["model"], x)
    assert_close(passes.optimize(g), saved["model"], x)


def test_paths_agree_on_structure(loaded):
    graphs = [loaded[p] for p in PATHS]
    ref = [(op.type, op.name, op.attrs.get("padding")) for op in graphs[0].ops]
    for g in graphs[1:]:
        assert [(op.type, op.name, op.attrs.get("padding")) for op in g.ops] == ref


def _lower(model, shape, tmp_path=None, via="traced"):
    torch.manual_seed(0)
    model = model.eval()
    x = torch.randn(shape)
    if via == "module":
        return frontends.from_module(model, x), model, x
    if via == "pt2":
        return frontends.load(models.save_pt2(model, x, tmp_path / "m.pt2")), model, x
    f = models.save_torchscript(model, x, tmp_path / "m.pt", scripted=via == "scripted")
    return frontends.load(f, input_shape=shape), model, x


def test_weight_layouts_and_names(tmp_path):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 4, (3, 2), padding=1, bias=False),
                                      nn.Conv2d(4, 8, 3, groups=4))
            self.head = nn.Linear(8 * 3 * 4, 3, bias=False)

        def forward(self, x):
            return self.head(torch.flatten(self.body(x), 1))

    g, m, x = _lower(M(), (1, 2, 5, 5), tmp_path)
    conv, dw, flat, fc = g.ops
    assert (conv.type, conv.name, dw.type, dw.name, fc.name) == \
        ("conv2d", "body.0", "depthwise_conv2d", "body.1", "head")
    w = m.body[0].weight.detach().numpy()
    np.testing.assert_array_equal(g.tensors[conv.inputs[1]].data, w.transpose(0, 2, 3, 1))
    assert conv.inputs[2] == "" and fc.inputs[2] == ""
    assert conv.attrs["padding"] == (1, 1, 1, 1)
    wd = m.body[1].weight.detach().numpy()            # (8, 1, 3, 3): out channel o reads input o // 2
    np.testing.assert_array_equal(g.tensors[dw.inputs[1]].data, wd.transpose(1, 2, 3, 0))
    assert dw.attrs["depth_multiplier"] == 2
    # Linear after flattening an 8x3x4 map: columns move from NCHW to NHWC order.
    wf = m.head.weight.detach().numpy().reshape(3, 8, 3, 4).transpose(0, 2, 3, 1).reshape(3, -1)
    np.testing.assert_array_equal(g.tensors[fc.inputs[1]].data, wf)
    assert_close(g, m, x)


def test_same_padding_even_kernel_is_asymmetric(tmp_path):
    m = nn.Sequential(nn.Conv2d(3, 4, 4, padding="same"), nn.Conv2d(4, 4, (2, 3), padding="same", dilation=(3, 1)))
    g, m, x = _lower(m, (1, 3, 7, 6), tmp_path)
    assert g.ops[0].attrs["padding"] == (1, 1, 2, 2)           # 3 rows: 1 above, 2 below
    assert g.ops[1].attrs["padding"] == (1, 1, 2, 1)           # dilated kh 2 -> 3 rows; kw 3 -> 1, 1
    assert_close(g, m, x)


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_padding(tmp_path, count_include_pad):
    m = nn.Sequential(nn.Conv2d(2, 3, 1), nn.AvgPool2d(3, 2, padding=1, count_include_pad=count_include_pad))
    g, m, x = _lower(m, (1, 2, 7, 8), tmp_path)
    types = [op.type for op in g.ops]
    if count_include_pad:     # TFLite averages in-bounds taps only, so the zeros become a pad op
        assert types == ["conv2d", "pad", "avg_pool2d"] and g.ops[2].attrs["padding"] == (0, 0, 0, 0)
    else:
        assert types == ["conv2d", "avg_pool2d"] and g.ops[1].attrs["padding"] == (1, 1, 1, 1)
    assert_close(g, m, x)


def test_ceil_mode_accepted_only_when_it_changes_nothing(tmp_path):
    g, m, x = _lower(nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2, ceil_mode=True)), (1, 1, 8, 8), tmp_path)
    assert_close(g, m, x)
    with pytest.raises(TinydsError, match=r"m\.pt: layer 1: max_pool2d with ceil_mode=True"):
        _lower(nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2, ceil_mode=True)), (1, 1, 7, 8), tmp_path)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2", "module"])
def test_global_pool_variants(tmp_path, via):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            y = self.conv(x)
            return F.softmax(self.pool(y).view(1, -1) + y.mean([2, 3]) + y.mean((-1, -2), keepdim=True).squeeze(), -1)

    g, m, x = _lower(M(), (1, 3, 6, 9), tmp_path, via)
    assert [op.attrs["kernel"] for op in g.ops if op.type == "avg_pool2d"] == [(4, 7)] * 3
    assert_close(g, m, x)


def test_matmul_plus_bias_becomes_linear(tmp_path):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 4))
            self.b = nn.Parameter(torch.randn(4))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(F.relu(torch.flatten(x, 1) @ self.w + self.b))

    for via in ("traced", "scripted", "pt2", "module"):
        g, m, x = _lower(M(), (1, 6, 1, 1), tmp_path, via)
        assert [op.type for op in g.ops if op.type != "reshape"] == ["fully_connected", "relu", "fully_connected"]
        assert assert_close(passes.optimize(g), m, x) < 1e-5


def test_residual_add_and_relu6_clamp(tmp_path):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            y = self.a(x)
            y = y + F.relu6(self.b(y))
            y += x
            y.add_(self.a(y))                           # mutated in place, read below
            return torch.clamp(y, 0, 6)

    torch.manual_seed(1)
    m = M()
    m.a.weight.data *= 4
    for via in ("traced", "scripted", "pt2"):
        g, m, x = _lower(m, (1, 4, 5, 5), tmp_path, via)
        assert [op.type for op in g.ops] == ["conv2d", "conv2d", "relu6", "add", "add", "conv2d", "add", "relu6"]
        assert_close(passes.optimize(g), m, x * 3)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2"])
def test_zero_pad_and_batchnorm1d_after_linear(tmp_path, via):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pad = nn.ZeroPad2d((1, 2, 0, 3))
            self.conv = nn.Conv2d(2, 3, 3)
            self.fc = nn.Linear(3, 4)
            self.bn = nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.conv(F.pad(self.pad(x), [1, 1, 1, 1])).mean([2, 3])
            return torch.clamp_min(self.bn(self.fc(y)), 0.0)

    m = M()
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    g, m, x = _lower(m, (1, 2, 5, 4), tmp_path, via)
    pads = [op.attrs["padding"] for op in g.ops if op.type == "pad"]
    assert pads == [(0, 1, 3, 2), (1, 1, 1, 1)]                    # (top, left, bottom, right)
    opt = passes.optimize(g)
    assert [op.type for op in opt.ops if op.type != "reshape"] == ["pad", "pad", "conv2d", "avg_pool2d",
                                                                   "fully_connected"]
    assert_close(opt, m, x * 2)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2", "module"])
def test_elementwise_activations(tmp_path, via):
    m = nn.Sequential(nn.Conv2d(2, 4, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3), nn.Hardswish(),
                      nn.Conv2d(4, 3, 1), nn.Sigmoid(), nn.Conv2d(3, 2, 1), nn.LeakyReLU(inplace=True))
    g, m, x = _lower(m, (1, 2, 6, 5), tmp_path, via)
    assert [op.type for op in g.ops] == ["conv2d", "leaky_relu", "conv2d", "hard_swish", "conv2d",
                                         "logistic", "conv2d", "leaky_relu"]
    assert [op.attrs["alpha"] for op in g.ops if op.type == "leaky_relu"] == pytest.approx([0.2, 0.01])
    assert_close(g, m, x * 4)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2", "module"])
def test_mul_sub_hardsigmoid_and_scalars(tmp_path, via):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.a(x)
            gate = F.hardsigmoid(y.mean((2, 3), keepdim=True))
            z = (self.b(x) - y) * gate                         # [1,C,H,W] x [1,C,1,1]
            return (z * 0.5 + 1.0) - 2 * y

    g, m, x = _lower(M(), (1, 3, 5, 6), tmp_path, via)
    types = [op.type for op in g.ops]
    assert types == ["conv2d", "avg_pool2d", "add", "mul", "conv2d", "sub", "mul", "mul", "add",
                     "mul", "sub"]
    hs_add, hs_mul = g.ops[2], g.ops[3]
    assert hs_add.attrs["activation"] == "relu6"
    assert [float(g.tensors[n].data[0]) for n in (hs_add.inputs[1], hs_mul.inputs[1])] == \
        pytest.approx([3.0, 1 / 6])
    assert g.tensors[g.ops[6].inputs[1]].shape == (1, 1, 1, 4)
    assert_close(g, m, x * 3)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2"])
def test_cat_on_channels_height_width_and_flat(tmp_path, via):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 5, (1, 2))

        def forward(self, x):
            y = self.a(x)
            c = torch.cat([y, self.b(F.pad(x, [0, 1, 0, 0])), y], dim=1)
            h = torch.cat([c, c], dim=-2)
            w = torch.cat([h, h], dim=3)
            return torch.cat([w.mean((2, 3)), y.mean((2, 3))], dim=1)

    g, m, x = _lower(M(), (1, 2, 4, 3), tmp_path, via)
    cats = [(op.attrs["axis"], g.tensors[op.outputs[0]].shape) for op in g.ops
            if op.type == "concatenation"]
    assert cats == [(3, (1, 4, 3, 11)), (1, (1, 8, 3, 11)), (2, (1, 8, 6, 11)), (1, (1, 14))]
    assert_close(g, m, x)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2"])
def test_mean_over_other_dims(tmp_path, via):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            a, b = y.mean(1, keepdim=True), y.mean((1, 3), keepdim=True)   # over C; over C, W
            c = y.mean((1, 2))                                                # (1, W)
            return torch.cat([(a * b).flatten(1), c, c.mean(1, keepdim=True)], 1)

    g, m, x = _lower(M(), (1, 2, 3, 5), tmp_path, via)
    means = [(op.attrs["axes"], g.tensors[op.outputs[0]].shape) for op in g.ops if op.type == "mean"]
    assert means == [((3,), (1, 3, 5, 1)), ((2, 3), (1, 3, 1, 1)), ((1, 3), (1, 1, 5, 1)),
                     ((1,), (1, 1))]
    assert_close(g, m, x)
    with pytest.raises(TinydsError, match=r"mean over dims \[1\] of shape \(1, 4, 3, 5\) is not "):
        _lower(nn.Sequential(nn.Conv2d(2, 4, 1), ChannelMean()), (1, 2, 3, 5), tmp_path, via)


@pytest.mark.parametrize("via", ["traced", "scripted", "pt2"])
def test_permute_and_transpose(tmp_path, via):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 4, 1), nn.Conv2d(5, 3, (2, 1))
            self.c = nn.Conv1d(3, 2, 1)

        def forward(self, x):
            y = self.a(x).permute(0, 3, 1, 2)           # (1, W=5, C=4, H=3): W becomes channels
            z = self.b(y.transpose(2, 3))                # (1, 5, 3, 4) -> conv over "H"=3
            s = z.mean(2, keepdim=True).squeeze(2)        # (1, 3, 4) as (N, C, L)
            return self.c(s.permute(0, 2, 1).permute(0, 2, 1)) * 2

    g, m, x = _lower(M(), (1, 2, 3, 5), tmp_path, via)
    assert sum(op.type == "transpose" for op in g.ops) == 4
    assert_close(g, m, x)


class ChannelMean(nn.Module):
    def forward(self, x):
        return x.mean(1)                  # (1, H, W): NCHW and NHWC orders differ


def test_constant_minus_activation_is_refused(tmp_path):
    class M(nn.Module):
        def forward(self, x):
            return 1.0 - x

    with pytest.raises(TinydsError, match=r"m\.pt2: layer rsub: unsupported op aten::rsub; "):
        _lower(M(), (1, 2, 3, 3), tmp_path, "pt2")


# ---- errors ---------------------------------------------------------------

def test_unsupported_op_names_op_layer_and_supported(tmp_path):
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Tanh())
    for via, f in (("traced", "m.pt"), ("pt2", "m.pt2")):
        with pytest.raises(TinydsError) as e:
            _lower(m, (1, 1, 4, 4), tmp_path, via)
        msg = str(e.value)
        assert msg.startswith(f"{tmp_path / f}: layer 1: unsupported op aten::tanh; supported: ")
        assert "conv2d" in msg.split("supported: ", 1)[1].split(", ")
        assert "\n" not in msg


@pytest.mark.parametrize("layer, problem", [
    (nn.Conv2d(4, 8, 3, groups=2), "grouped convolution"),
    (nn.ConvTranspose2d(4, 4, 2), "conv_transpose2d"),
    (nn.MaxPool2d(2, dilation=2), "dilation"),
    (nn.AvgPool2d(2, divisor_override=3), "divisor_override"),
    (nn.Upsample(scale_factor=2), "unsupported op aten::upsample"),
])
def test_unsupported_configurations(tmp_path, layer, problem):
    with pytest.raises(TinydsError, match=problem):
        _lower(nn.Sequential(nn.Conv2d(4, 4, 1), layer), (1, 4, 6, 6), tmp_path)


@pytest.mark.parametrize("where", ["conv", "bn", "fc"])
def test_nan_or_inf_weights_name_the_layer(tmp_path, where):
    m = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2)).eval()
    target = {"conv": m[0].weight, "bn": m[1].running_var, "fc": m[3].bias}[where]
    target.data[0] = float("nan") if where != "fc" else float("inf")
    with pytest.raises(TinydsError, match=rf"layer {dict(conv=0, bn=1, fc=3)[where]}: .*NaN or Inf"):
        frontends.from_module(m, torch.zeros(1, 1, 2, 2))


def test_corrupt_and_truncated_files(tmp_path):
    m = models.DSStack().eval()
    good = models.save_torchscript(m, torch.zeros(1, 3, 8, 8), tmp_path / "good.pt")
    data = good.read_bytes()
    for name, blob in (("trunc.pt", data[: len(data) // 2]), ("junk.pt", b"not a model at all" * 10),
                       ("empty.pt2", b"")):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(TinydsError, match=rf"^{tmp_path / name}: .*corrupt or truncated"):
            frontends.load(tmp_path / name)
    flipped = bytearray(data)
    i = data.index(b"constants.pkl") + 200            # damage a stored member: its CRC no longer matches
    flipped[i:i + 16] = b"\x00" * 16
    (tmp_path / "flip.pt").write_bytes(bytes(flipped))
    with pytest.raises(TinydsError, match=rf"^{tmp_path / 'flip.pt'}: "):
        frontends.load(tmp_path / "flip.pt")
    with pytest.raises(TinydsError, match="cannot read the model file"):
        frontends.load(tmp_path / "missing.pt")


def test_state_dict_and_pickled_module(tmp_path):
    m, x = models.build("dscnn")
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(TinydsError, match=r"sd\.pt: holds only a state_dict.*architecture.*torch\.jit\.trace"):
        frontends.load(tmp_path / "sd.pt")
    torch.save(m, tmp_path / "mod.pt")
    with pytest.raises(TinydsError, match=r"mod\.pt: is a pickled nn\.Module and unpickling runs arbitrary "
                                          r"code; export it instead with torch\.jit\.trace.*--allow-pickle"):
        frontends.load(tmp_path / "mod.pt")
    with pytest.raises(TinydsError, match="input shape"):
        frontends.load(tmp_path / "mod.pt", allow_pickle=True)
    g = frontends.load(tmp_path / "mod.pt", allow_pickle=True, input_shape=(1, 1, 49, 10))
    assert g.name == "mod"
    assert_close(g, m, torch.randn(2, 1, 49, 10))


def test_scripted_needs_input_shape_and_checks_channels(tmp_path):
    m, x = models.build("dscnn")
    f = models.save_torchscript(m, x, tmp_path / "s.pt", scripted=True)
    with pytest.raises(TinydsError, match=r"s\.pt: the input shape is unknown.*--input-shape.*C=1"):
        frontends.load(f)
    with pytest.raises(TinydsError, match=r"layer conv1\.0: expects 1 input channels but gets 3"):
        frontends.load(f, input_shape=(1, 3, 49, 10))


def test_traced_input_shape_is_read_without_unpickling_code(tmp_path):
    m, x = models.build("opmix")
    f = models.save_torchscript(m, torch.randn(5, 3, 24, 20), tmp_path / "t.pt")
    assert frontends.torchscript.traced_input_shapes(f) == [(5, 3, 24, 20)]
    assert frontends.load(f).input.shape == (1, 24, 20, 3)    # batch 1 regardless of the trace's batch


def test_sniff(tmp_path, zoo_files):
    m, x = models.build("ds_stack")
    d = zoo_files("ds_stack")
    torch.save(m, tmp_path / "p.pt")
    assert [frontends.sniff(p) for p in (d["traced"], d["scripted"], d["pt2"], tmp_path / "p.pt")] == \
        ["torchscript", "torchscript", "export", "pickle"]
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("a/readme.txt", "hi")
    assert frontends.sniff(tmp_path / "other.zip") == "unknown"


def test_flattened_feature_map_as_output_is_rejected(tmp_path):
    with pytest.raises(TinydsError, match="flattened NCHW feature map"):
        _lower(nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten()), (1, 2, 3, 3), tmp_path)
