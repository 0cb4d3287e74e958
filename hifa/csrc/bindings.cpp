// Python bindings of the CPU kernels (hifa/cpu_kernels.py builds them into one extension).
#include <torch/extension.h>

#include <vector>

torch::Tensor hashgrid_forward(torch::Tensor unit, std::vector<torch::Tensor> tables, std::vector<double> scales,
                               std::vector<int64_t> resolutions, std::vector<bool> hashed, bool smoothstep,
                               int64_t threads);
std::vector<torch::Tensor> hashgrid_backward(torch::Tensor grad_out, torch::Tensor unit, std::vector<torch::Tensor> tables,
                                             std::vector<double> scales, std::vector<int64_t> resolutions,
                                             std::vector<bool> hashed, bool smoothstep, int64_t threads);
void adan_step(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads, std::vector<torch::Tensor> exp_avgs,
               std::vector<torch::Tensor> exp_avg_sqs, std::vector<torch::Tensor> exp_avg_diffs,
               std::vector<torch::Tensor> prev_grads, double clip, double beta1, double beta2, double beta3,
               double bias_correction3_sq, double eps, double step_size, double diff_step_size, double decay);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &hashgrid_forward, "hash-grid encoding forward (CPU)");
  m.def("backward", &hashgrid_backward, "hash-grid encoding table gradients (CPU)");
  m.def("adan_step", &adan_step, "one fused Adan step over lists of float32 CPU tensors");
}
