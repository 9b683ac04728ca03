# A small, read-only safetensors implementation in plain Python + torch, installed by the interop
# check only where the `safetensors` package is missing or a stand-in (as in environments without
# PyPI). It provides what transformers' from_pretrained calls: safe_open(path, framework="pt")
# (keys, metadata, get_tensor) and safetensors.torch.load_file. Shipped exports do not need it.

import importlib.machinery
import json
import struct
import sys
import types

import torch

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _File:
    def __init__(self, path, framework="pt", device="cpu"):
        if framework != "pt":
            raise ValueError(f"safetensors_lite supports framework='pt' only, got {framework!r}")
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            self._data = f.read()
        self._meta = header.pop("__metadata__", {}) or {}
        self._header = header
        self._path = path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def keys(self):
        return list(self._header.keys())

    def metadata(self):
        return dict(self._meta)

    def get_tensor(self, name):
        e = self._header[name]
        begin, end = e["data_offsets"]
        dtype = _DTYPES[e["dtype"]]
        raw = bytearray(self._data[begin:end])
        if len(raw) == 0:
            return torch.empty(e["shape"], dtype=dtype)
        return torch.frombuffer(raw, dtype=dtype).reshape(e["shape"]).clone()


def load_file(path, device="cpu"):
    f = _File(path)
    return {k: f.get_tensor(k) for k in f.keys()}


def install():
    """Replace a stand-in `safetensors` module with this reader; returns True if it did."""
    try:
        import safetensors

        real = not getattr(safetensors.safe_open, "__module__", "").startswith("safetensors")
        probe = safetensors.safe_open
        try:
            probe("/nonexistent-probe", framework="pt")
        except NotImplementedError:
            real = False
        except Exception:
            real = True
        if real:
            return False
    except ImportError:
        pass
    top = types.ModuleType("safetensors")
    top.__version__ = "0.4.5"
    top.safe_open = _File
    top.SafetensorError = type("SafetensorError", (Exception,), {})
    sub = types.ModuleType("safetensors.torch")
    sub.load_file = load_file
    sub.load = lambda data: (_ for _ in ()).throw(NotImplementedError("safetensors_lite: load"))
    sub.save_file = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError("read-only"))
    sub.storage_ptr = lambda t: t.data_ptr()
    sub.storage_size = lambda t: t.numel() * t.element_size()
    top.torch = sub
    top.__spec__ = importlib.machinery.ModuleSpec("safetensors", None, is_package=True)
    sub.__spec__ = importlib.machinery.ModuleSpec("safetensors.torch", None)
    sys.modules["safetensors"] = top
    sys.modules["safetensors.torch"] = sub
    return True
