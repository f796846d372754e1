// Bitmap SpMV for batch 1: y[r] = sum_k W[r, k] x[k], W in the 1x64 bitmap format
// (see kernels/formats/bitmap.py). One warp per output row; lane l walks tiles
// l, l + 32, ... so the bitmap and offset loads of a warp are coalesced. Inside
// a tile the set bits are visited lowest first: __ffsll finds the column and the
// running count of visited bits is the rank into the tile's packed values.
// Accumulation is in float32. This file needs no PyTorch headers, so it can be
// compiled on its own with `nvcc -c`; bitmap_spmv.cpp binds it to PyTorch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

namespace {

constexpr int kWarpSize = 32;
constexpr int kWarpsPerBlock = 8;

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__half v) { return __half2float(v); }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ inline T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline __half from_float<__half>(float v) { return __float2half(v); }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

template <typename T>
__global__ void bitmap_spmv_kernel(const T* __restrict__ x, const int64_t* __restrict__ bitmaps,
                                   const int32_t* __restrict__ tile_offsets, const T* __restrict__ values,
                                   T* __restrict__ y, int out_features, int num_tiles) {
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= out_features) return;
  const int64_t row_start = static_cast<int64_t>(row) * num_tiles;
  float sum = 0.0f;
  for (int tile = lane; tile < num_tiles; tile += kWarpSize) {
    unsigned long long bits = static_cast<unsigned long long>(bitmaps[row_start + tile]);
    const T* tile_values = values + tile_offsets[row_start + tile];
    const T* tile_x = x + tile * 64;
    for (int rank = 0; bits != 0; ++rank) {
      const int column = __ffsll(static_cast<long long>(bits)) - 1;
      sum += to_float(tile_values[rank]) * to_float(tile_x[column]);
      bits &= bits - 1;  // clear the lowest set bit
    }
  }
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    sum += __shfl_down_sync(0xffffffffu, sum, offset);
  }
  if (lane == 0) y[row] = from_float<T>(sum);
}

template <typename T>
void launch(const void* x, const int64_t* bitmaps, const int32_t* tile_offsets, const void* values, void* y,
            int out_features, int num_tiles, cudaStream_t stream) {
  const int blocks = (out_features + kWarpsPerBlock - 1) / kWarpsPerBlock;
  bitmap_spmv_kernel<T><<<blocks, kWarpsPerBlock * kWarpSize, 0, stream>>>(
      static_cast<const T*>(x), bitmaps, tile_offsets, static_cast<const T*>(values), static_cast<T*>(y),
      out_features, num_tiles);
}

}  // namespace

// dtype_code: 0 float32, 1 float16, 2 bfloat16. Returns the launch error (cudaSuccess if none).
cudaError_t bitmap_spmv_launch(const void* x, const int64_t* bitmaps, const int32_t* tile_offsets,
                               const void* values, void* y, int out_features, int num_tiles, int dtype_code,
                               cudaStream_t stream) {
  switch (dtype_code) {
    case 0: launch<float>(x, bitmaps, tile_offsets, values, y, out_features, num_tiles, stream); break;
    case 1: launch<__half>(x, bitmaps, tile_offsets, values, y, out_features, num_tiles, stream); break;
    case 2: launch<__nv_bfloat16>(x, bitmaps, tile_offsets, values, y, out_features, num_tiles, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
