// Portability macros for code shared by host compilers and nvcc.
#pragma once

#if defined(__CUDACC__)
#define FLASHATTN_HOST_DEVICE __host__ __device__
#define FLASHATTN_DEVICE __device__ __forceinline__
#else
#define FLASHATTN_HOST_DEVICE
#define FLASHATTN_DEVICE
#endif
