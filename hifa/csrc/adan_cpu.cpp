// One Adan step (pytorch_optimizer.Adan, foreach path, weight_decouple=False) fused into a single
// pass per tensor: reads p, g, m, v, n, prev once and writes them once, where the foreach path makes
// about fifteen passes. Same operations in the same order, float32 throughout.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

struct AdanScalars {
  float clip, w1, w2, b2, b3, w3, bc3, eps, s1, s2, d;
};

// Restrict-qualified arguments of a plain function: the compiler may vectorise without alias checks.
void adan_range(float* __restrict__ p, float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
                float* __restrict__ n, float* __restrict__ prev, int64_t count, const AdanScalars k) {
  for (int64_t i = 0; i < count; ++i) {
    const float grad = g[i] * k.clip;
    g[i] = grad;  // the foreach path scales the gradients in place too
    float diff = prev[i] + grad;  // prev holds -g of the previous step
    const float mi = m[i] + k.w1 * (grad - m[i]);  // lerp with weight < 0.5
    const float ni = n[i] + k.w2 * (diff - n[i]);
    diff = diff * k.b2 + grad;
    const float vi = v[i] * k.b3 + k.w3 * (diff * diff);
    const float den = std::sqrt(vi) / k.bc3 + k.eps;
    float q = p[i] + k.s1 * (mi / den);
    q = q + k.s2 * (ni / den);
    p[i] = q / k.d;  // d == 1 without weight decay: exact
    m[i] = mi;
    n[i] = ni;
    v[i] = vi;
    prev[i] = -grad;
  }
}

}  // namespace

void adan_step(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads, std::vector<torch::Tensor> exp_avgs,
               std::vector<torch::Tensor> exp_avg_sqs, std::vector<torch::Tensor> exp_avg_diffs,
               std::vector<torch::Tensor> prev_grads, double clip, double beta1, double beta2, double beta3,
               double bias_correction3_sq, double eps, double step_size, double diff_step_size, double decay) {
  const size_t count = params.size();
  TORCH_CHECK(grads.size() == count && exp_avgs.size() == count && exp_avg_sqs.size() == count &&
                  exp_avg_diffs.size() == count && prev_grads.size() == count,
              "adan_step: tensor lists differ in length");
  // Scalars as the foreach ops see them: Python floats become float32 for float32 tensors.
  const AdanScalars k{static_cast<float>(clip), static_cast<float>(1.0 - beta1), static_cast<float>(1.0 - beta2),
                      static_cast<float>(beta2), static_cast<float>(beta3), static_cast<float>(1.0 - beta3),
                      static_cast<float>(bias_correction3_sq), static_cast<float>(eps), static_cast<float>(-step_size),
                      static_cast<float>(-diff_step_size), static_cast<float>(1.0 + decay)};
  for (size_t j = 0; j < count; ++j) {
    for (const auto* t : {&params[j], &grads[j], &exp_avgs[j], &exp_avg_sqs[j], &exp_avg_diffs[j], &prev_grads[j]}) {
      TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat32 && t->is_contiguous() &&
                      t->numel() == params[j].numel(),
                  "adan_step: every tensor must be a contiguous float32 CPU tensor of its parameter's size");
    }
    float* p = params[j].data_ptr<float>();
    float* g = grads[j].data_ptr<float>();
    float* m = exp_avgs[j].data_ptr<float>();
    float* v = exp_avg_sqs[j].data_ptr<float>();
    float* n = exp_avg_diffs[j].data_ptr<float>();
    float* prev = prev_grads[j].data_ptr<float>();
    at::parallel_for(0, params[j].numel(), 16384, [&](int64_t begin, int64_t end) {
      adan_range(p + begin, g + begin, m + begin, v + begin, n + begin, prev + begin, end - begin, k);
    });
  }
}
