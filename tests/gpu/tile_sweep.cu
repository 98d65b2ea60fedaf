// Tile sweep of the sm80-path forward kernel (built with -DFLASHATTN_GPU_TILE_SWEEP=ON only): times one
// tile configuration, given by SWEEP_D / SWEEP_M / SWEEP_N / SWEEP_W, on the standard grid (bf16, hidden
// 2048, batch = 16k / seqlen) with and without causal, and with SWEEP_WINDOW=L also under the sliding
// window (L, 0) (local mask). The tile table in cuda/common/tile_sm80.h is chosen from these numbers
// (docs/kernels_sm80.md).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuda/sm80/fwd_launch_sm80.cuh"

#ifndef SWEEP_ORDER_FWD
#define SWEEP_ORDER_FWD 0  // 1: causal query blocks in launch order (shortest first) instead of longest first
#endif

namespace flashattn {

void sweep_one() {
  using T = cutlass::bfloat16_t;
  using Traits = kern::FwdTraitsSm80<SWEEP_D, SWEEP_M, SWEEP_N, SWEEP_W, T>;
  // SWEEP_SEQLENS="512 1024 ...": the sequence lengths timed (default 1k, 4k, 16k).
  std::vector<int> seqlens;
  if (const char* env = std::getenv("SWEEP_SEQLENS")) {
    for (char* end = nullptr;; env = end) {
      const long v = std::strtol(env, &end, 10);
      if (end == env) break;
      if (v > 0 && 16384 % v == 0) seqlens.push_back(static_cast<int>(v));
    }
  }
  if (seqlens.empty()) seqlens = {1024, 4096, 16384};
  const int window = std::getenv("SWEEP_WINDOW") ? std::atoi(std::getenv("SWEEP_WINDOW")) : -1;
  // mode 0: no mask, 1: causal, 2: window (window, 0)
  for (int mode = 0; mode < (window >= 0 ? 3 : 2); ++mode) {
    const int causal = mode == 1;
    for (int s : seqlens) {
      const int d = SWEEP_D, h = 2048 / d, b = 16384 / s;
      const size_t n = static_cast<size_t>(b) * s * h * d;
      T *q, *k, *v, *o;
      cudaMalloc(&q, n * sizeof(T));
      cudaMalloc(&k, n * sizeof(T));
      cudaMalloc(&v, n * sizeof(T));
      cudaMalloc(&o, n * sizeof(T));
      std::vector<uint16_t> host(n);
      uint32_t x = 12345;
      for (auto& e : host) {  // small random bf16 values (never zeros)
        x = x * 1664525u + 1013904223u;
        const float f = (static_cast<int>(x >> 9 & 0xffff) - 32768) / 16384.f;
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        e = static_cast<uint16_t>(bits >> 16);
      }
      cudaMemcpy(q, host.data(), n * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(k, host.data(), n * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(v, host.data(), n * 2, cudaMemcpyHostToDevice);
      FwdParams p{};
      p.dtype = DType::kBF16;
      p.batch = b;
      p.nheads = p.nheads_k = h;
      p.head_ratio = 1;
      p.head_dim = d;
      p.seqlen_q = p.seqlen_k = s;
      p.total_q = p.total_k = static_cast<int64_t>(b) * s;
      p.batch_k = b;
      p.q = q;
      p.k = k;
      p.v = v;
      p.out = o;
      p.q_row_stride = p.k_row_stride = p.v_row_stride = p.o_row_stride = static_cast<int64_t>(h) * d;
      p.q_head_stride = p.k_head_stride = p.v_head_stride = p.o_head_stride = d;
      p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = p.o_batch_stride = static_cast<int64_t>(s) * h * d;
      p.scale_softmax = 1.f / std::sqrt(static_cast<float>(d));
      p.scale_softmax_log2 = p.scale_softmax * 1.4426950408889634f;
      p.is_causal = causal;
      p.window_left = mode == 2 ? window : -1;
      p.window_right = mode == 0 ? -1 : 0;
      p.num_splits = 1;
      auto launch = [&] {
        if (causal) {
          kern::launch_fwd_sm80<Traits, kern::MaskCausal, kern::ScorePlain, !SWEEP_ORDER_FWD>(p, nullptr);
        } else if (mode == 2) {
          kern::launch_fwd_sm80<Traits, kern::MaskLocal, kern::ScorePlain>(p, nullptr);
        } else {
          kern::launch_fwd_sm80<Traits, kern::MaskNone, kern::ScorePlain>(p, nullptr);
        }
      };
      for (int i = 0; i < 3; ++i) launch();
      std::vector<float> ms;
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      for (int i = 0; i < 15; ++i) {
        cudaEventRecord(e0);
        launch();
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float t = 0;
        cudaEventElapsedTime(&t, e0, e1);
        ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      double pairs = static_cast<double>(s) * s / (causal ? 2 : 1);  // (query, key) pairs computed
      if (mode == 2) {
        pairs = 0;
        for (int i = 0; i < s; ++i) pairs += std::min(i, window) + 1;
      }
      const double flops = 4.0 * b * h * d * pairs;
      std::printf("sweep d%d %dx%d %dw%s %s seqlen=%5d  %.3f ms  %.1f TFLOP/s  %s\n", d, SWEEP_M, SWEEP_N, SWEEP_W,
                  SWEEP_ORDER_FWD ? " fwd-order" : "", mode == 0 ? "none  " : (mode == 1 ? "causal" : "window"), s, ms[ms.size() / 2], flops / ms[ms.size() / 2] / 1e9,
                  cudaGetErrorString(cudaGetLastError()));
      cudaFree(q);
      cudaFree(k);
      cudaFree(v);
      cudaFree(o);
    }
  }
}

}  // namespace flashattn

int main() {
  flashattn::sweep_one();
  return 0;
}
