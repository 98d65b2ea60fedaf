"""Array adapters: the few things the binding needs from numpy arrays and torch tensors.

An adapter turns an array into a C tensor descriptor (pointer, dtype code, device, shape, strides in
elements), allocates outputs and workspace next to a given array, and fixes layouts the library does not
take. Neither numpy nor torch is imported unless an array of that kind is actually passed.
"""

import sys

from . import _lib as L
from ._lib import FlashAttnInvalidArgument

_pack_into = L._TENSOR_FMT.pack_into
_ZPAD = L._ZPAD


def _dtype_error(name, dtype):
    return FlashAttnInvalidArgument(
        "%s: dtype %s is not supported (expected float32, float16, bfloat16, int32 or int64 as the "
        "argument requires)" % (name, dtype))


class NumpyAdapter(object):
    """numpy arrays run on the CPU backend; workspace is a numpy byte buffer."""

    is_cuda = False

    def __init__(self):
        import numpy as np
        self.np = np
        self.dtypes = {np.dtype(np.float32): L.DTYPE_FP32, np.dtype(np.float16): L.DTYPE_FP16,
                       np.dtype(np.int32): L.DTYPE_INT32, np.dtype(np.int64): L.DTYPE_INT64}
        self.np_dtypes = {L.DTYPE_FP32: np.float32, L.DTYPE_FP16: np.float16, L.DTYPE_INT32: np.int32,
                          L.DTYPE_INT64: np.int64}
        try:  # bfloat16 exists in numpy only through ml_dtypes; optional
            import ml_dtypes
            self.dtypes[np.dtype(ml_dtypes.bfloat16)] = L.DTYPE_BF16
            self.np_dtypes[L.DTYPE_BF16] = ml_dtypes.bfloat16
        except ImportError:
            pass

    def desc(self, name, a):
        dt = self.dtypes.get(a.dtype)
        if dt is None:
            raise _dtype_error(name, a.dtype)
        item = a.itemsize
        if a.size == 0:
            # numpy gives empty arrays all-zero strides; describe them as C-contiguous instead.
            strides, acc = [], 1
            for n in reversed(a.shape):
                strides.append(acc)
                acc *= max(n, 1)
            return (a.__array_interface__["data"][0], dt, L.DEVICE_CPU, 0, a.shape, tuple(reversed(strides)))
        return (a.__array_interface__["data"][0], dt, L.DEVICE_CPU, 0, a.shape,
                tuple(s // item for s in a.strides))

    def pack(self, buf, off, name, a):
        L.pack_tensor(buf, off, *self.desc(name, a))

    def dtype_code(self, a):
        return self.dtypes.get(a.dtype, 0)

    def conform(self, name, a):
        """Only the last dim must be contiguous on the CPU; strides must be whole elements."""
        item = a.itemsize
        st = a.strides
        if a.size == 0:
            return a
        if (a.ndim and st[-1] != item and a.shape[-1] > 1) or any(s % item for s in st):
            return self.np.ascontiguousarray(a)
        return a

    def conforms(self, a):
        return self.conform("out", a) is a

    def conform_meta(self, a):
        if a is None:
            return None
        if not isinstance(a, self.np.ndarray):
            a = self.np.asarray(a)
        return self.np.ascontiguousarray(a)

    def empty(self, shape, dtype_code, like):
        return self.np.empty(shape, dtype=self.np_dtypes[dtype_code])

    def empty_as(self, shape, like):
        return self.np.empty(shape, dtype=like.dtype)

    def zeros(self, shape, dtype_code, like):
        return self.np.zeros(shape, dtype=self.np_dtypes[dtype_code])

    def workspace(self, nbytes, like):
        buf = self.np.empty(max(int(nbytes), 1), dtype=self.np.uint8)
        return buf.__array_interface__["data"][0], buf

    def stream(self, like):
        return None

    def head_dim_multiple(self, like):
        return 1  # the CPU backend takes any head dim

    def pad_last(self, a, d):
        pad = [(0, 0)] * (a.ndim - 1) + [(0, d - a.shape[-1])]
        return self.np.pad(a, pad)

    def copy_(self, dst, src):
        dst[...] = src

    def contiguous(self, a):
        return self.np.ascontiguousarray(a)


class TorchAdapter(object):
    """torch tensors: CPU tensors run on the CPU backend, CUDA tensors on the GPU on the current stream."""

    def __init__(self):
        import torch
        self.torch = torch
        self.dtypes = {torch.float32: L.DTYPE_FP32, torch.float16: L.DTYPE_FP16, torch.bfloat16: L.DTYPE_BF16,
                       torch.int32: L.DTYPE_INT32, torch.int64: L.DTYPE_INT64}
        self.torch_dtypes = {v: k for k, v in self.dtypes.items()}
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        if raw is not None:
            self._stream = raw  # avoids building a torch.cuda.Stream object per call
        else:  # pragma: no cover - older torch
            self._stream = lambda idx: torch.cuda.current_stream(idx).cuda_stream

    def desc(self, name, t):
        dt = self.dtypes.get(t.dtype)
        if dt is None:
            raise _dtype_error(name, t.dtype)
        if t.is_cuda:
            return (t.data_ptr(), dt, L.DEVICE_CUDA, t.get_device(), t.shape, t.stride())
        if t.device.type != "cpu":
            raise FlashAttnInvalidArgument("%s: device %s is not supported (expected cpu or cuda)"
                                           % (name, t.device))
        return (t.data_ptr(), dt, L.DEVICE_CPU, 0, t.shape, t.stride())

    def pack(self, buf, off, name, t):
        """desc() + pack_tensor() in one step: this runs ~5 times per call, so no intermediate tuples."""
        dt = self.dtypes.get(t.dtype)
        if dt is None:
            raise _dtype_error(name, t.dtype)
        if t.is_cuda:
            devt, devid = L.DEVICE_CUDA, t.get_device()
        elif t.is_cpu:
            devt, devid = L.DEVICE_CPU, 0
        else:
            raise FlashAttnInvalidArgument("%s: device %s is not supported (expected cpu or cuda)" % (name, t.device))
        shape = t.shape
        nd = len(shape)
        if nd > L.MAX_NDIM:
            raise FlashAttnInvalidArgument("%s: %d dims, flashattn supports at most %d" % (name, nd, L.MAX_NDIM))
        pad = _ZPAD[nd]
        _pack_into(buf, off, t.data_ptr(), dt, devt, devid, nd, *shape, *pad, *t.stride(), *pad)

    def dtype_code(self, t):
        return self.dtypes.get(t.dtype, 0)

    def _conforms(self, t):
        if t.is_contiguous():
            # The common case in one C call: contiguous strides are products of trailing sizes, so they are
            # all multiples of 8 when the last size is (GPU); on the CPU only the last stride matters.
            return not t.is_cuda or (t.shape[-1] % 8 == 0 and t.data_ptr() % 16 == 0) if t.dim() else True
        st = t.stride()
        if st and st[-1] != 1 and t.shape[-1] > 1:
            return False
        if t.is_cuda:
            # GPU kernels use 16-byte vector loads: base aligned, every non-last stride a multiple of 8.
            if t.data_ptr() % 16:
                return False
            for s, n in zip(st[:-1], t.shape[:-1]):
                if s % 8 and n > 1:
                    return False
        return True

    def conform(self, name, t):
        if self._conforms(t):
            return t
        # clone, not contiguous(): a contiguous tensor at a misaligned storage offset must move too.
        return t.clone(memory_format=self.torch.contiguous_format)

    def conforms(self, t):
        return self._conforms(t)

    def conform_meta(self, t):
        if t is None:
            return None
        return t if t.is_contiguous() else t.contiguous()

    def empty(self, shape, dtype_code, like):
        return like.new_empty(shape, dtype=self.torch_dtypes[dtype_code])

    def empty_as(self, shape, like):
        return like.new_empty(shape)  # dtype and device from `like` without building a torch.device

    def zeros(self, shape, dtype_code, like):
        return self.torch.zeros(shape, dtype=self.torch_dtypes[dtype_code], device=like.device)

    def workspace(self, nbytes, like):
        # torch's caching allocator: no cudaMalloc, no sync, stream-ordered (safe in graph capture).
        buf = like.new_empty((int(nbytes),), dtype=self.torch.uint8)
        return buf.data_ptr(), buf

    def stream(self, like):
        if like.is_cuda:
            return self._stream(like.get_device())
        return None

    def head_dim_multiple(self, like):
        # GPU kernels need head_dim % 8 == 0; pad with zeros as flash_attn does (scores are unchanged).
        return 8 if like.is_cuda else 1

    def pad_last(self, t, d):
        return self.torch.nn.functional.pad(t, (0, d - t.shape[-1]))

    def copy_(self, dst, src):
        dst.copy_(src)

    def contiguous(self, t):
        return t.contiguous()


_numpy = None
_torch = None


def adapter_for(x):
    """The adapter of an array (numpy ndarray or torch.Tensor)."""
    global _numpy, _torch
    mod = type(x).__module__
    if mod.startswith("torch") or "torch" in sys.modules and isinstance(x, sys.modules["torch"].Tensor):
        if _torch is None:
            _torch = TorchAdapter()
        return _torch
    if mod == "numpy" or hasattr(x, "__array_interface__"):
        if _numpy is None:
            _numpy = NumpyAdapter()
        return _numpy
    raise FlashAttnInvalidArgument("expected a torch.Tensor or numpy.ndarray, got %s" % type(x).__name__)
