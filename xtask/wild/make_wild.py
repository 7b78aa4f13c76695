#!/usr/bin/env python3
"""Exports "wild" models — the graph patterns torch's two ONNX exporters
(TorchScript and dynamo) emit for real architectures — into
OUT/<name>_<ts|dynamo>/ with random-normal calibration/test data and a
Horizon-style model.yaml, for `run_wild.sh` to push through hb-calib,
hb-compile and hb-verifier.

    pip install torchvision==0.29.2 pillow --no-deps --target /tmp/tvlib
    PYTHONPATH=/tmp/tvlib python3 xtask/wild/make_wild.py --out /tmp/wild [model ...]
    xtask/wild/run_wild.sh /tmp/wild

Weights are random (torchvision's pretrained weights need the network):
BatchNorm statistics come from a few forward passes in train mode and
zero-initialised heads get random weights. The models are not committed
(tens of MB); docs/wild-models.md has the last run's table.
"""
import argparse
import os
import warnings

warnings.simplefilter("ignore")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

torch.manual_seed(0)


def prep(m, shape, n_warm=8):
    for mod in m.modules():  # torchvision zero-inits some heads: give them weights
        if isinstance(mod, torch.nn.Linear) and mod.weight.abs().sum() == 0:
            torch.nn.init.normal_(mod.weight, std=0.1)
    m.train()
    with torch.no_grad():
        for _ in range(n_warm):
            m(torch.randn(*shape) * 0.5)
    m.eval()
    return m

TORCHVISION = {
  'mnv3s': (lambda: torchvision.models.mobilenet_v3_small(), (1,3,96,96), 17),
  'resnet18': (lambda: torchvision.models.resnet18(), (1,3,64,64), 13),
  'shufflenet': (lambda: torchvision.models.shufflenet_v2_x0_5(), (1,3,64,64), 13),
  'effb0': (lambda: torchvision.models.efficientnet_b0(), (1,3,64,64), 17),
  'vit_tiny': (lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10), (1,3,32,32), 17),
  'lraspp': (lambda: torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4), (1,3,64,64), 17),
  # The same ViT at opset 14: torch spells each LayerNorm out op by op
  # (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add), which
  # hb-calib fuses back into LayerNormalization.
  'vit_tiny_op14': (lambda: torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10), (1,3,32,32), 14),
}

# Hand-written blocks: ConvNeXt (LayerNorm over channels, tanh Gelu,
# GroupNorm), attention with a key-padding mask, 1-D audio convs with
# InstanceNorm, a detection head (Upsample, Concat of boxes and scores), a GRU,
# a 2-layer LSTM read through Y_h, and bidirectional GRU + LSTM.
class ConvNeXtBlock(nn.Module):
    def __init__(s, c=32):
        super().__init__(); s.dw=nn.Conv2d(c,c,7,padding=3,groups=c); s.ln=nn.LayerNorm(c); s.pw1=nn.Linear(c,4*c); s.pw2=nn.Linear(4*c,c); s.g=nn.Parameter(torch.ones(c)*0.5)
    def forward(s,x):
        y=s.dw(x).permute(0,2,3,1); y=s.pw2(F.gelu(s.pw1(s.ln(y)), approximate='tanh'))*s.g
        return x+y.permute(0,3,1,2)
class ConvNeXtTiny(nn.Module):
    def __init__(s):
        super().__init__(); s.stem=nn.Conv2d(3,32,4,stride=4); s.b=nn.Sequential(ConvNeXtBlock(),ConvNeXtBlock()); s.gn=nn.GroupNorm(4,32); s.head=nn.Linear(32,10)
    def forward(s,x): return s.head(F.adaptive_avg_pool2d(s.gn(s.b(s.stem(x))),1).flatten(1))
class MHAPad(nn.Module):
    def __init__(s):
        super().__init__(); s.emb=nn.Linear(16,64); s.att=nn.MultiheadAttention(64,4,batch_first=True); s.ln=nn.LayerNorm(64); s.out=nn.Linear(64,8)
    def forward(s,x):
        pad=(x.abs().sum(-1)==0)
        h=s.emb(x); a,_=s.att(h,h,h,key_padding_mask=pad); return s.out(s.ln(h+a))
class Audio1d(nn.Module):
    def __init__(s):
        super().__init__(); s.c1=nn.Conv1d(1,16,9,stride=2,padding=4); s.c2=nn.Conv1d(16,32,5,stride=2,padding=2,groups=2); s.inorm=nn.InstanceNorm1d(32,affine=True); s.fc=nn.Linear(32,5)
    def forward(s,x): return s.fc(F.silu(s.inorm(s.c2(F.leaky_relu(s.c1(x),0.1)))).mean(-1))
class DetHead(nn.Module):
    def __init__(s):
        super().__init__(); s.b=nn.Sequential(nn.Conv2d(3,16,3,2,1),nn.ReLU6(),nn.Conv2d(16,32,3,2,1),nn.ReLU6()); s.up=nn.Upsample(scale_factor=2,mode='nearest'); s.box=nn.Conv2d(32,4,1); s.cls=nn.Conv2d(32,3,1)
    def forward(s,x):
        f=s.b(x); f=s.up(f)
        box=s.box(f).flatten(2).transpose(1,2)*16.0; cls=torch.sigmoid(s.cls(f)).flatten(2).transpose(1,2)
        return torch.cat([box,cls],-1)
class YoloV8Tiny(nn.Module):
    """A YOLOv8-shaped detector: SiLU convs, C2f (Split + Concat), SPPF
    (three MaxPool 5x5 + Concat), FPN (Upsample + Concat), decoupled heads
    with DFL (Softmax over 16 bins, a fixed 1x1 conv with arange weights),
    dist2bbox against an anchor grid times the stride, sigmoid class scores,
    boxes (0..img) and scores (0..1) concatenated into one [1, 4+nc, A]
    output — the classic int8 trap of one scale for both."""
    class Conv(nn.Module):
        def __init__(s, a, b, k=3, st=1):
            super().__init__(); s.c=nn.Conv2d(a,b,k,st,k//2,bias=False); s.bn=nn.BatchNorm2d(b)
        def forward(s,x): return F.silu(s.bn(s.c(x)))
    class C2f(nn.Module):
        def __init__(s, a, b):
            super().__init__(); C=YoloV8Tiny.Conv; s.h=b//2; s.cv1=C(a,b,1); s.m1=C(s.h,s.h); s.m2=C(s.h,s.h); s.cv2=C(3*s.h,b,1)
        def forward(s,x):
            y=list(s.cv1(x).split((s.h,s.h),1)); y.append(y[-1]+s.m2(s.m1(y[-1]))); return s.cv2(torch.cat(y,1))
    def __init__(s, nc=6, img=64):
        super().__init__(); C=YoloV8Tiny.Conv
        s.stem=nn.Sequential(C(3,16,3,2),C(16,32,3,2),YoloV8Tiny.C2f(32,32))
        s.p4=nn.Sequential(C(32,64,3,2),YoloV8Tiny.C2f(64,64))
        s.sppf1=C(64,32,1); s.sppf2=C(128,64,1)
        s.up=nn.Upsample(scale_factor=2,mode='nearest'); s.fpn=YoloV8Tiny.C2f(96,32)
        s.nc=nc; s.reg=16; s.img=img
        s.box=nn.ModuleList([nn.Sequential(C(c,32),nn.Conv2d(32,4*16,1)) for c in (32,64)])
        s.cls=nn.ModuleList([nn.Sequential(C(c,32),nn.Conv2d(32,nc,1)) for c in (32,64)])
        s.dfl=nn.Conv2d(16,1,1,bias=False); s.dfl.weight.data[:]=torch.arange(16,dtype=torch.float).view(1,16,1,1); s.dfl.requires_grad_(False)
        # Trained-detector ranges: peaked DFL bins, class logits around the
        # prior bias (YOLOv8 initialises it to log(5 / nc / (img / s)^2)).
        with torch.no_grad():
            for hb, hc in zip(s.box, s.cls):
                hb[1].weight.mul_(30.0); hc[1].weight.mul_(30.0); hc[1].bias.fill_(-4.0)
    def forward(s,x):
        p3=s.stem(x); p4=s.p4(p3)
        y=s.sppf1(p4); a=F.max_pool2d(y,5,1,2); b=F.max_pool2d(a,5,1,2); c=F.max_pool2d(b,5,1,2); p4=s.sppf2(torch.cat([y,a,b,c],1))
        p3=s.fpn(torch.cat([s.up(p4),p3],1))
        outs=[]; anchors=[]; strides=[]
        for i,f in enumerate((p3,p4)):
            outs.append(torch.cat([s.box[i](f),s.cls[i](f)],1).flatten(2))
            h,w=f.shape[2:]; st=s.img//h
            sy,sx=torch.meshgrid(torch.arange(h)+0.5,torch.arange(w)+0.5,indexing='ij')
            anchors.append(torch.stack([sx,sy],-1).view(-1,2)); strides.append(torch.full((h*w,1),float(st)))
        o=torch.cat(outs,2); A=o.shape[2]
        box,cls=o.split((64,s.nc),1)
        d=s.dfl(box.view(1,4,16,A).transpose(2,1).softmax(1)).view(1,4,A)
        anc=torch.cat(anchors).T.unsqueeze(0); st=torch.cat(strides).T.unsqueeze(0)
        lt,rb=d.chunk(2,1); x1y1=anc-lt; x2y2=anc+rb
        xywh=torch.cat([(x1y1+x2y2)/2,x2y2-x1y1],1)*st
        return torch.cat([xywh,cls.sigmoid()],1)
class GRUNet(nn.Module):
    def __init__(s): super().__init__(); s.g=nn.GRU(8,16,batch_first=True); s.fc=nn.Linear(16,2)
    def forward(s,x): y,_=s.g(x); return s.fc(y[:,-1])
class LSTMNet(nn.Module):  # 2 stacked layers; the head reads the last layer's Y_h
    def __init__(s): super().__init__(); s.l=nn.LSTM(8,16,num_layers=2,batch_first=True); s.fc=nn.Linear(16,2)
    def forward(s,x): _,(h,_)=s.l(x); return s.fc(h[-1])
class BiRNNNet(nn.Module):  # bidirectional GRU into bidirectional LSTM, mean over time
    def __init__(s): super().__init__(); s.g=nn.GRU(8,16,batch_first=True,bidirectional=True); s.l=nn.LSTM(32,12,batch_first=True,bidirectional=True); s.fc=nn.Linear(24,2)
    def forward(s,x): y,_=s.g(x); y,_=s.l(torch.tanh(y)); return s.fc(y.mean(1))
CUSTOM={'convnext':(ConvNeXtTiny,(1,3,32,32)),'mha_pad':(MHAPad,(1,12,16)),'audio1d':(Audio1d,(1,1,256)),'dethead':(DetHead,(1,3,32,32)),'yolov8':(YoloV8Tiny,(1,3,64,64)),'gru':(GRUNet,(1,10,8)),'lstm':(LSTMNet,(1,10,8)),'birnn':(BiRNNNet,(1,10,8))}


class Unwrap(nn.Module):
    """Returns the 'out' entry of segmentation models' dict outputs."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        y = self.m(x)
        return y["out"] if isinstance(y, dict) else y


def export(name, build, shape, opset, out):
    for dyn in (False, True):
        tag = f"{name}_{'dynamo' if dyn else 'ts'}"
        d = os.path.join(out, tag)
        for split in ("calib", "test"):
            os.makedirs(os.path.join(d, split, "input"), exist_ok=True)
        m = Unwrap(build()).eval()
        try:
            torch.onnx.export(m, (torch.randn(*shape),), os.path.join(d, "model.onnx"),
                              input_names=["input"], output_names=["output"],
                              opset_version=18 if dyn else opset, dynamo=dyn)
        except Exception as e:  # record and go on: exporters fail on some models
            print(tag, "EXPORT FAILED", type(e).__name__, str(e)[:150])
            continue
        rng = np.random.default_rng(1)

        def sample():
            v = (rng.standard_normal(shape) * 0.5).astype(np.float32)
            if name == "mha_pad":
                v[:, -3:, :] = 0  # padded tokens
            return v

        for k in range(12):
            np.save(os.path.join(d, "calib", "input", f"{k}.npy"), sample())
        for k in range(4):
            np.save(os.path.join(d, "test", "input", f"{k}.npy"), sample())
        with open(os.path.join(d, "model.yaml"), "w") as f:
            f.write("model_parameters:\n  onnx_model: model.onnx\n  march: nash-e\n"
                    "  working_dir: out\n  output_model_file_prefix: m\n"
                    "input_parameters:\n  input_name: input\n"
                    f"  input_shape: {'x'.join(map(str, shape))}\n"
                    "calibration_parameters:\n  cal_data_dir: calib/input\n")
        print(tag, "ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/wild")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    for name, (build, shape, opset) in TORCHVISION.items():
        if not a.models or name in a.models:
            export(name, lambda b=build, s=shape: prep(b(), s), shape, opset, a.out)
    for name, (cls, shape) in CUSTOM.items():
        if not a.models or name in a.models:
            export(name, (lambda c=cls, sh=shape: prep(c(), sh)) if name == "yolov8" else cls,
                   shape, 17, a.out)


if __name__ == "__main__":
    main()
