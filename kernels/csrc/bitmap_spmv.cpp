// PyTorch binding of bitmap_spmv.cu (batch-1 bitmap SpMV); built by kernels/cuda_bitmap.py.
#include <ATen/cuda/CUDAContext.h>
#include <torch/extension.h>

cudaError_t bitmap_spmv_launch(const void* x, const int64_t* bitmaps, const int32_t* tile_offsets,
                               const void* values, void* y, int out_features, int num_tiles, int dtype_code,
                               cudaStream_t stream);

torch::Tensor bitmap_spmv(const torch::Tensor& x, const torch::Tensor& bitmaps, const torch::Tensor& tile_offsets,
                          const torch::Tensor& values) {
  TORCH_CHECK(x.is_cuda() && x.is_contiguous() && x.dim() == 1, "x must be a contiguous 1-D CUDA tensor");
  TORCH_CHECK(bitmaps.scalar_type() == at::kLong && tile_offsets.scalar_type() == at::kInt,
              "bitmaps must be int64 and tile_offsets int32");
  TORCH_CHECK(values.scalar_type() == x.scalar_type(), "values and x must share a dtype");
  int dtype_code = -1;
  switch (x.scalar_type()) {
    case at::kFloat: dtype_code = 0; break;
    case at::kHalf: dtype_code = 1; break;
    case at::kBFloat16: dtype_code = 2; break;
    default: TORCH_CHECK(false, "unsupported dtype ", x.scalar_type());
  }
  const auto out_features = bitmaps.size(0);
  auto y = torch::empty({out_features}, x.options());
  const cudaError_t status = bitmap_spmv_launch(
      x.data_ptr(), bitmaps.data_ptr<int64_t>(), tile_offsets.data_ptr<int32_t>(), values.data_ptr(), y.data_ptr(),
      static_cast<int>(out_features), static_cast<int>(bitmaps.size(1)), dtype_code,
      at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "bitmap_spmv launch failed: ", cudaGetErrorString(status));
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("bitmap_spmv", &bitmap_spmv, "y = W x for a bitmap-format W and a 1-D x (CUDA)");
}
