"""ctypes binding of the flashattn C ABI (include/flashattn/flashattn.h).

Nothing here imports torch or numpy: the binding speaks only pointers, dtype codes, shapes and strides,
so one wheel serves every Python >= 3.9 and every torch version (the library is never compiled against
torch). The hot path is kept lean: function pointers and initialised argument-struct templates are
cached once, and tensor descriptors are written with one ``struct.pack_into`` call each instead of
~20 ctypes attribute assignments.
"""

import ctypes
import glob
import os
import struct
import sys
import threading

MAX_NDIM = 6

# flashattn_status
STATUS_OK = 0
STATUS_INVALID_ARGUMENT = 1
STATUS_NOT_SUPPORTED = 2
STATUS_NOT_BUILT = 3
STATUS_WORKSPACE_TOO_SMALL = 4
STATUS_DEVICE_ERROR = 5
STATUS_BAD_METADATA = 6
STATUS_INTERNAL = 7

# flashattn_dtype
DTYPE_FP32 = 1
DTYPE_FP16 = 2
DTYPE_BF16 = 3
DTYPE_INT32 = 4
DTYPE_INT64 = 5

DEVICE_CPU = 1
DEVICE_CUDA = 2

_STATUS_NAMES = {
    0: "OK", 1: "INVALID_ARGUMENT", 2: "NOT_SUPPORTED", 3: "NOT_BUILT", 4: "WORKSPACE_TOO_SMALL",
    5: "DEVICE_ERROR", 6: "BAD_METADATA", 7: "INTERNAL",
}


# ---- Exceptions ------------------------------------------------------------------------------------
class FlashAttnError(RuntimeError):
    """An error reported by the flashattn library (or by the binding on its behalf).

    ``status`` is the C API's flashattn_status code; the message is flashattn_last_error()'s text,
    which names the argument, the expected and the given value.
    """

    def __init__(self, message, status=STATUS_INTERNAL):
        super().__init__(message)
        self.status = status

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self.status))


class FlashAttnInvalidArgument(FlashAttnError, ValueError):
    """Bad shape, dtype, stride, value or combination of arguments."""

    def __init__(self, message, status=STATUS_INVALID_ARGUMENT):
        super().__init__(message, status)


class FlashAttnNotSupported(FlashAttnError, NotImplementedError):
    """A valid request this build or this library version cannot serve (NOT_SUPPORTED / NOT_BUILT)."""

    def __init__(self, message, status=STATUS_NOT_SUPPORTED):
        super().__init__(message, status)


class FlashAttnNotBuilt(FlashAttnNotSupported):
    """The kernel exists but is not compiled into this build: rebuild with it enabled."""

    def __init__(self, message, status=STATUS_NOT_BUILT):
        super().__init__(message, status)


_STATUS_EXC = {
    STATUS_INVALID_ARGUMENT: FlashAttnInvalidArgument,
    STATUS_NOT_SUPPORTED: FlashAttnNotSupported,
    STATUS_NOT_BUILT: FlashAttnNotBuilt,
    STATUS_BAD_METADATA: FlashAttnInvalidArgument,
}


def error_for_status(status, message):
    cls = _STATUS_EXC.get(status, FlashAttnError)
    return cls("flashattn: %s (%s)" % (message, _STATUS_NAMES.get(status, str(status))), status)


# ---- C structs ---------------------------------------------------------------------------------------
class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("device_type", ctypes.c_int32),
        ("device_id", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * MAX_NDIM),
        ("strides", ctypes.c_int64 * MAX_NDIM),
    ]


class Options(ctypes.Structure):
    _fields_ = [
        ("softmax_scale", ctypes.c_float),
        ("causal", ctypes.c_int32),
        ("window_left", ctypes.c_int32),
        ("window_right", ctypes.c_int32),
        ("softcap", ctypes.c_float),
        ("alibi_slopes", Tensor),
        ("sinks", Tensor),
        ("dropout_p", ctypes.c_float),
        ("dropout_seed", ctypes.c_uint64),
        ("dropout_offset", ctypes.c_uint64),
        ("dropout_rng_state", Tensor),
        ("deterministic", ctypes.c_int32),
        ("num_splits", ctypes.c_int32),
        ("batch_invariant", ctypes.c_int32),
        ("check_metadata", ctypes.c_int32),
    ]


class FwdArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint64),
        ("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor), ("lse", Tensor),
        ("cu_seqlens_q", Tensor), ("cu_seqlens_k", Tensor), ("seqused_k", Tensor), ("block_table", Tensor),
        ("max_seqlen_q", ctypes.c_int64), ("max_seqlen_k", ctypes.c_int64),
        ("opt", Options),
    ]


class BwdArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint64),
        ("q", Tensor), ("k", Tensor), ("v", Tensor), ("out", Tensor),
        ("dout", Tensor), ("lse", Tensor),
        ("dq", Tensor), ("dk", Tensor), ("dv", Tensor), ("dsinks", Tensor),
        ("cu_seqlens_q", Tensor), ("cu_seqlens_k", Tensor),
        ("max_seqlen_q", ctypes.c_int64), ("max_seqlen_k", ctypes.c_int64),
        ("opt", Options),
    ]


class KvcacheArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint64),
        ("q", Tensor), ("k_cache", Tensor), ("v_cache", Tensor), ("k_new", Tensor), ("v_new", Tensor),
        ("out", Tensor), ("lse", Tensor),
        ("cache_seqlens", Tensor), ("cache_batch_idx", Tensor), ("cache_leftpad", Tensor),
        ("block_table", Tensor), ("rotary_cos", Tensor), ("rotary_sin", Tensor),
        ("rotary_interleaved", ctypes.c_int32),
        ("opt", Options),
    ]


class CombineArgs(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint64),
        ("out_partial", Tensor), ("lse_partial", Tensor), ("out", Tensor), ("lse", Tensor), ("sinks", Tensor),
    ]


class PlanInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint64),
        ("path", ctypes.c_int32), ("block_m", ctypes.c_int32), ("block_n", ctypes.c_int32),
        ("num_warps", ctypes.c_int32), ("head_dim_rounded", ctypes.c_int32), ("num_splits", ctypes.c_int32),
        ("workspace_bytes", ctypes.c_uint64),
        ("kernel", ctypes.c_char * 128),
    ]


class BuildInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint64),
        ("version", ctypes.c_char * 32),
        ("abi_version", ctypes.c_int32),
        ("cuda_enabled", ctypes.c_int32),
        ("cuda_runtime_version", ctypes.c_int32),
        ("archs", ctypes.c_char * 64),
        ("dtypes", ctypes.c_char * 64),
        ("head_dims", ctypes.c_char * 128),
        ("features", ctypes.c_char * 256),
        ("num_kernels", ctypes.c_int32),
    ]


# A flashattn_tensor laid out as packed native fields: the struct has no internal padding
# (8 + 4*4 + 6*8 + 6*8 = 120 bytes), so "=" (no alignment) matches the C layout exactly.
_TENSOR_FMT = struct.Struct("=Q4i6q6q")
assert _TENSOR_FMT.size == ctypes.sizeof(Tensor)
_ZPAD = tuple((0,) * (MAX_NDIM - n) for n in range(MAX_NDIM + 1))
_pack_into = _TENSOR_FMT.pack_into


def _field_offset(struct_type, path):
    off = 0
    t = struct_type
    for name in path.split("."):
        f = getattr(t, name)
        off += f.offset
        t = dict(t._fields_)[name]
    return off


class _Offsets(object):
    """Byte offsets of the tensor fields of one argument struct (so descriptors can be packed in place)."""

    def __init__(self, struct_type):
        self.size = ctypes.sizeof(struct_type)
        for name, ftype in struct_type._fields_:
            if ftype is Tensor:
                setattr(self, name, _field_offset(struct_type, name))
        if any(n == "opt" for n, _ in struct_type._fields_):
            for name in ("alibi_slopes", "sinks", "dropout_rng_state"):
                setattr(self, "opt_" + name, _field_offset(struct_type, "opt." + name))


FWD_OFF = _Offsets(FwdArgs)
BWD_OFF = _Offsets(BwdArgs)
KVC_OFF = _Offsets(KvcacheArgs)
CMB_OFF = _Offsets(CombineArgs)


def pack_tensor(buf, offset, ptr, dtype, device_type, device_id, shape, strides):
    """Write one flashattn_tensor into ``buf`` (a ctypes struct) at byte ``offset``."""
    nd = len(shape)
    if nd > MAX_NDIM:
        raise FlashAttnInvalidArgument("tensor has %d dims, flashattn supports at most %d" % (nd, MAX_NDIM))
    pad = _ZPAD[nd]
    _pack_into(buf, offset, ptr, dtype, device_type, device_id, nd, *shape, *pad, *strides, *pad)


# ---- Library loading ----------------------------------------------------------------------------------
_LIB_NAMES = ("libflashattn.so", "libflashattn.so.*", "libflashattn.dylib", "flashattn.dll")


def _candidates():
    env = os.environ.get("FLASHATTN_LIBRARY")
    if env:
        # An explicit path wins and is the only candidate: a wrong path must not silently fall back.
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for pattern in _LIB_NAMES:
        out += sorted(glob.glob(os.path.join(here, "lib", pattern)))
    # Running from a source checkout (PYTHONPATH=python): use a CMake build tree of this repository.
    repo = os.path.dirname(os.path.dirname(here))
    for preset in ("cpu", "ci", "dev", "release"):
        out += sorted(glob.glob(os.path.join(repo, "build", preset, "libflashattn.so")))
    out += sorted(glob.glob(os.path.join(repo, "build", "*", "libflashattn.so")))
    return out


class _Lib(object):
    """The loaded library: cached function pointers and initialised argument templates."""

    def __init__(self, path):
        self.path = path
        lib = ctypes.CDLL(path)
        self.lib = lib
        vp, sz, i32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32

        def fn(name, restype, argtypes):
            f = getattr(lib, name)
            f.restype = restype
            f.argtypes = argtypes
            return f

        self.version = fn("flashattn_version", ctypes.c_char_p, [])
        self.abi_version = fn("flashattn_abi_version", i32, [])
        self.last_error = fn("flashattn_last_error", ctypes.c_char_p, [])
        self.status_string = fn("flashattn_status_string", ctypes.c_char_p, [ctypes.c_int])
        self.build_info_get = fn("flashattn_build_info_get", ctypes.c_int, [vp])
        self.set_num_threads = fn("flashattn_set_num_threads", ctypes.c_int, [i32])
        self.get_num_threads = fn("flashattn_get_num_threads", i32, [])
        ws = [vp, ctypes.POINTER(sz)]
        run = [vp, vp, sz, vp]
        self.fwd_workspace_size = fn("flashattn_fwd_workspace_size", ctypes.c_int, ws)
        self.fwd = fn("flashattn_fwd", ctypes.c_int, run)
        self.varlen_fwd = fn("flashattn_varlen_fwd", ctypes.c_int, run)
        self.fwd_plan = fn("flashattn_fwd_plan", ctypes.c_int, [vp, vp])
        self.bwd_workspace_size = fn("flashattn_bwd_workspace_size", ctypes.c_int, ws)
        self.bwd = fn("flashattn_bwd", ctypes.c_int, run)
        self.varlen_bwd = fn("flashattn_varlen_bwd", ctypes.c_int, run)
        self.bwd_plan = fn("flashattn_bwd_plan", ctypes.c_int, [vp, vp])
        self.kvcache_workspace_size = fn("flashattn_kvcache_workspace_size", ctypes.c_int, ws)
        self.fwd_kvcache = fn("flashattn_fwd_kvcache", ctypes.c_int, run)
        self.kvcache_plan = fn("flashattn_kvcache_plan", ctypes.c_int, [vp, vp])
        self.combine = fn("flashattn_combine", ctypes.c_int, [vp, vp])

        abi = self.abi_version()
        if abi != 1:
            raise ImportError("flashattn: %s has ABI version %d, this package speaks ABI 1" % (path, abi))

        # Templates initialised by the library itself (defaults, struct_size); each call copies one.
        self.fwd_tmpl = FwdArgs()
        fn("flashattn_fwd_args_init", None, [vp])(ctypes.byref(self.fwd_tmpl))
        self.bwd_tmpl = BwdArgs()
        fn("flashattn_bwd_args_init", None, [vp])(ctypes.byref(self.bwd_tmpl))
        self.kvc_tmpl = KvcacheArgs()
        fn("flashattn_kvcache_args_init", None, [vp])(ctypes.byref(self.kvc_tmpl))
        self.cmb_tmpl = CombineArgs()
        fn("flashattn_combine_args_init", None, [vp])(ctypes.byref(self.cmb_tmpl))
        # The library may be older than this header: it reads only struct_size bytes, and we must not
        # send a struct_size larger than what we allocated.
        for t in (self.fwd_tmpl, self.bwd_tmpl, self.kvc_tmpl, self.cmb_tmpl):
            if t.struct_size == 0 or t.struct_size > ctypes.sizeof(t):
                t.struct_size = ctypes.sizeof(t)
        self.fwd_tmpl_bytes = bytes(self.fwd_tmpl)
        self.bwd_tmpl_bytes = bytes(self.bwd_tmpl)
        self.kvc_tmpl_bytes = bytes(self.kvc_tmpl)
        self.cmb_tmpl_bytes = bytes(self.cmb_tmpl)
        self._build_info = None

    def error(self, status):
        msg = self.last_error()
        msg = msg.decode("utf-8", "replace") if msg else ""
        if not msg:
            s = self.status_string(status)
            msg = s.decode() if s else "error"
        return error_for_status(status, msg)

    def build_info(self):
        if self._build_info is None:
            info = BuildInfo()
            info.struct_size = ctypes.sizeof(info)
            st = self.build_info_get(ctypes.byref(info))
            if st:
                raise self.error(st)
            self._build_info = {
                "version": info.version.decode(),
                "abi_version": info.abi_version,
                "cuda_enabled": bool(info.cuda_enabled),
                "cuda_runtime_version": info.cuda_runtime_version,
                "archs": info.archs.decode(),
                "dtypes": info.dtypes.decode(),
                "head_dims": info.head_dims.decode(),
                "features": info.features.decode(),
                "num_kernels": info.num_kernels,
                "path": self.path,
            }
        return self._build_info


_lib = None
_lib_lock = threading.Lock()
_load_error = None


def lib():
    """The loaded library; raises ImportError with every path tried when it cannot be found."""
    global _lib, _load_error
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            tried = []
            for path in _candidates():
                try:
                    _lib = _Lib(path)
                    break
                except (OSError, AttributeError) as e:
                    tried.append("%s: %s" % (path, e))
            if _lib is None:
                _load_error = ImportError(
                    "flashattn: cannot load libflashattn (set FLASHATTN_LIBRARY=/path/libflashattn.so, or "
                    "`pip install .`). Tried: %s" % ("; ".join(tried) if tried else "no candidate found"))
                raise _load_error
    return _lib


def library_available():
    try:
        lib()
        return True
    except ImportError:
        return False


if sys.version_info < (3, 9):  # pragma: no cover
    raise ImportError("flashattn needs Python >= 3.9")
