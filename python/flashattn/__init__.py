"""flashattn: exact, fast, memory-efficient attention; a drop-in for flash_attn and vllm_flash_attn.

The library (libflashattn, C ABI) is loaded with ctypes on first use; nothing is compiled against torch.
torch tensors (CPU or CUDA) go through torch.library custom ops with autograd; numpy arrays run on the
CPU backend. Set FLASHATTN_LIBRARY=/path/libflashattn.so to use a specific build (e.g. a CMake tree).
"""

import os as _os

from ._lib import (FlashAttnError, FlashAttnInvalidArgument, FlashAttnNotBuilt,  # noqa: F401
                   FlashAttnNotSupported)
from .functional import build_info, get_num_threads, set_num_threads  # noqa: F401
from .interface import (flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func,  # noqa: F401
                        flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                        flash_attn_varlen_qkvpacked_func, flash_attn_with_kvcache)

__version__ = "0.1.0"

__all__ = [
    "flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func", "flash_attn_varlen_func",
    "flash_attn_varlen_qkvpacked_func", "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache",
    "FlashAttnError", "FlashAttnInvalidArgument", "FlashAttnNotSupported", "FlashAttnNotBuilt",
    "build_info", "set_num_threads", "get_num_threads",
]


def _register_torch_ops():
    """Register torch.ops.flashattn.* at import when torch is installed, so the first call can already be
    traced by torch.compile (registration inside a traced region would break the graph)."""
    if _os.environ.get("FLASHATTN_NO_TORCH", "0") not in ("", "0"):
        return
    try:
        import torch
    except ImportError:
        return
    from . import _ops  # noqa: F401
    from . import interface
    interface._torch = torch
    interface._ops = _ops


_register_torch_ops()
