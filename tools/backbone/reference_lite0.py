#!/usr/bin/env python3
"""Independent float64 numpy reference of EfficientNet-Lite0 (from the safetensors written by
convert_lite0.py). One-time tooling; needs numpy, safetensors, scikit-image, pillow.

  python3 tools/backbone/reference_lite0.py /tmp/lite0/efficientnet-lite0-full.safetensors \
      --check-dir /tmp/lite0 --fixture kernels/tests/fixtures/lite0-fixture.safetensors

* ImageNet check: skimage.data.chelsea() / coffee(), whole image resized to 224x224 with
  PIL.Image.fromarray(img).resize((224, 224), Image.BILINEAR) (no crop, aspect not kept),
  then prints the top-5 classes (softmax).
* Fixture: stage 2/3/4 outputs and the 232-channel "local" feature for two small images.
Conventions: TF "SAME" padding (pad_before = total // 2, extra pixel bottom/right), BN eps 1e-3
applied unfolded, ReLU6, no squeeze-excitation.
"""
import argparse, datetime, json, os, sys

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__

import numpy as np
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from convert_lite0 import save_file  # deterministic safetensors writer (same directory)

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
BN_EPS = 1e-3
# (stage, first block, n blocks, kernel, first stride, out channels, expand ratio)
STAGES = [(0, 0, 1, 3, 1, 16, 1), (1, 1, 2, 3, 2, 24, 6), (2, 3, 2, 5, 2, 40, 6),
          (3, 5, 3, 3, 2, 80, 6), (4, 8, 3, 5, 1, 112, 6), (5, 11, 4, 5, 2, 192, 6),
          (6, 15, 1, 3, 1, 320, 6)]


def same_pad(x, k, s):
    """Zero-pad a [C, H, W] array TF-'SAME' style; returns padded array and output size."""
    out, pads = [], []
    for n in x.shape[1:]:
        o = -(-n // s)
        total = max((o - 1) * s + k - n, 0)
        out.append(o)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0)] + pads), out


def conv(x, w, s):
    """Dense conv, x [Ci, H, W], w [Co, Ci, k, k], SAME padding, no bias."""
    k = w.shape[-1]
    xp, (oh, ow) = same_pad(x, k, s)
    y = np.zeros((w.shape[0], oh, ow))
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy:dy + s * (oh - 1) + 1:s, dx:dx + s * (ow - 1) + 1:s]
            y += np.tensordot(w[:, :, dy, dx], patch, axes=1)
    return y


def dwconv(x, w, s):
    """Depthwise conv, w [C, 1, k, k], SAME padding, no bias."""
    k = w.shape[-1]
    xp, (oh, ow) = same_pad(x, k, s)
    y = np.zeros((x.shape[0], oh, ow))
    for dy in range(k):
        for dx in range(k):
            y += w[:, 0, dy, dx, None, None] * xp[:, dy:dy + s * (oh - 1) + 1:s,
                                                   dx:dx + s * (ow - 1) + 1:s]
    return y


def bn(x, W, p):
    g, b = W[p + ".weight"], W[p + ".bias"]
    m, v = W[p + ".running_mean"], W[p + ".running_var"]
    return ((x - m[:, None, None]) / np.sqrt(v[:, None, None] + BN_EPS)) * g[:, None, None] + b[:, None, None]


relu6 = lambda x: np.clip(x, 0.0, 6.0)


def block(x, W, i, k, s, cout, expand):
    p = f"_blocks.{i}."
    cin = x.shape[0]
    h = x
    if expand != 1:
        assert W[p + "_expand_conv.weight"].shape == (cin * expand, cin, 1, 1)
        h = relu6(bn(conv(h, W[p + "_expand_conv.weight"], 1), W, p + "_bn0"))
    else:
        assert p + "_expand_conv.weight" not in W
    assert W[p + "_depthwise_conv.weight"].shape == (cin * expand, 1, k, k)
    h = relu6(bn(dwconv(h, W[p + "_depthwise_conv.weight"], s), W, p + "_bn1"))
    assert W[p + "_project_conv.weight"].shape == (cout, cin * expand, 1, 1)
    h = bn(conv(h, W[p + "_project_conv.weight"], 1), W, p + "_bn2")
    if s == 1 and cin == cout:
        h = h + x
    return h


def normalise(img_u8):
    return ((img_u8.astype(np.float64) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def features(img_u8, W, last_stage=6):
    """Returns dict stage -> output of its last block ([C, H, W] float64)."""
    x = relu6(bn(conv(normalise(img_u8), W["_conv_stem.weight"], 2), W, "_bn0"))
    outs = {}
    for st, first, n, k, s, cout, e in STAGES[:last_stage + 1]:
        for j in range(n):
            x = block(x, W, first + j, k, s if j == 0 else 1, cout, e)
        outs[st] = x
    return outs


def classify(img_u8, W):
    x = features(img_u8, W)[6]
    x = relu6(bn(conv(x, W["_conv_head.weight"], 1), W, "_bn1"))
    logits = W["_fc.weight"] @ x.mean(axis=(1, 2)) + W["_fc.bias"]
    p = np.exp(logits - logits.max())
    return logits, p / p.sum()


def avgpool3(x, s):
    """3x3 average pool, zero padding 1, always divides by 9 (count_include_pad=True)."""
    xp = np.pad(x, [(0, 0), (1, 1), (1, 1)])
    oh, ow = (x.shape[1] - 1) // s + 1, (x.shape[2] - 1) // s + 1
    y = np.zeros((x.shape[0], oh, ow))
    for dy in range(3):
        for dx in range(3):
            y += xp[:, dy:dy + s * (oh - 1) + 1:s, dx:dx + s * (ow - 1) + 1:s]
    return y / 9.0


def fixture_images():
    from skimage import data
    cat = data.chelsea()  # 300 x 451
    a = np.asarray(Image.fromarray(cat[20:260, 80:373]).resize((88, 72), Image.BILINEAR))
    rng = np.random.default_rng(20240607)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((71, 57), Image.BICUBIC)).astype(np.float64)
    b = np.clip(np.rint(smooth + rng.normal(0.0, 6.0, smooth.shape)), 0, 255).astype(np.uint8)
    return {"a": a, "b": b}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", help="full safetensors from convert_lite0.py --out-full")
    ap.add_argument("--check-dir", help="write chelsea224.png, coffee224.png, imagenet_check.json here")
    ap.add_argument("--fixture", help="write the CI fixture safetensors here")
    a = ap.parse_args()

    W = {k: v.astype(np.float64) for k, v in load_file(a.weights).items()}
    with safe_open(a.weights, "np") as f:
        src_sha = f.metadata().get("sha256", "?")

    if "_fc.weight" in W:
        from skimage import data
        check = {}
        for name in ("chelsea", "coffee"):
            img = np.asarray(Image.fromarray(getattr(data, name)()).resize((224, 224), Image.BILINEAR))
            logits, p = classify(img, W)
            top = np.argsort(-p)[:5]
            check[name] = {"top5": [[int(i), float(p[i])] for i in top], "logits": logits.tolist()}
            print(f"{name}: top5 " + ", ".join(f"{i} ({p[i]:.4f})" for i in top))
            if a.check_dir:
                Image.fromarray(img).save(os.path.join(a.check_dir, f"{name}224.png"))
        if a.check_dir:
            with open(os.path.join(a.check_dir, "imagenet_check.json"), "w") as fh:
                json.dump(check, fh)

    if a.fixture:
        tensors = {}
        for case, img in fixture_images().items():
            o = features(img, W, last_stage=4)
            pools = [avgpool3(o[2], 2), avgpool3(o[3], 1), avgpool3(o[4], 1)]
            sizes = {p.shape[1:] for p in pools}
            if len(sizes) != 1:
                raise SystemExit(f"case {case}: local pooled sizes disagree: {[p.shape for p in pools]}")
            tensors[f"{case}.input"] = img
            for st in (2, 3, 4):
                tensors[f"{case}.stage{st}"] = o[st].astype(np.float32)
            tensors[f"{case}.local"] = np.concatenate(pools, axis=0).astype(np.float32)
        meta = {"script": "tools/backbone/reference_lite0.py (float64 numpy reference)",
                "date": datetime.date.today().isoformat(), "source_sha256": src_sha,
                "a": "chelsea()[20:260, 80:373] resized to 88x72 (w x h) with PIL BILINEAR",
                "b": "seeded (20240607) 6x8 random RGB, PIL BICUBIC to 71x57, + N(0,6) noise, uint8",
                "input_norm": "(u8/255 - mean[c]) / std[c], mean 0.485,0.456,0.406 std 0.229,0.224,0.225",
                "local": "concat(avgpool3x3 s2 p1(stage2), avgpool3x3 s1 p1(stage3), avgpool3x3 s1 p1(stage4)), "
                         "zero pad, divide by 9"}
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, a.fixture, metadata=meta)
        for k, v in tensors.items():
            print(f"{k:10s} {str(v.dtype):7s} {list(v.shape)}  max|v| = {np.abs(v.astype(np.float64)).max():.4f}")


if __name__ == "__main__":
    main()
