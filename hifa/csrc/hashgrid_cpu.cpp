// Multi-resolution hash-grid encoding on the CPU: forward and table gradient.
// Same conventions as hifa/encoding.py (tiny-cuda-nn's): vertex i of a level sits at
// u * scale + 0.5 == i; dense levels index x + y*res + z*res^2, hashed levels XOR the
// uint32 prime products; both wrap modulo the level size.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

struct LevelSpec {
  float scale;
  uint32_t resolution;
  uint32_t size;
  bool hashed;
};

inline uint32_t vertex_index(const LevelSpec& lv, uint32_t x, uint32_t y, uint32_t z) {
  if (lv.hashed) {
    // Hashed sizes are powers of two: the modulo is a mask.
    return ((x * 1u) ^ (y * 2654435761u) ^ (z * 805459861u)) & (lv.size - 1);
  }
  const uint32_t index = x + y * lv.resolution + z * lv.resolution * lv.resolution;
  return index < lv.size ? index : index % lv.size;
}

// The 8 corner indices and trilinear (or smoothstep) weights of one point at one level.
inline void cell(const LevelSpec& lv, const float* u, bool smoothstep, uint32_t idx[8], float w[8]) {
  uint32_t g[3];
  float f[3];
  for (int d = 0; d < 3; ++d) {
    const float pos = u[d] * lv.scale + 0.5f;
    // pos >= 0.5 (u is clamped to [0, 1]), so truncation is floor; unlike std::floor it needs no
    // SSE4.1 round instruction (or a libm call) on baseline x86-64.
    g[d] = static_cast<uint32_t>(pos);
    const float fl = static_cast<float>(g[d]);
    float fr = pos - fl;
    if (smoothstep) fr = fr * fr * (3.0f - 2.0f * fr);
    f[d] = fr;
  }
  for (int c = 0; c < 8; ++c) {
    const uint32_t bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
    idx[c] = vertex_index(lv, g[0] + bx, g[1] + by, g[2] + bz);
    w[c] = (bx ? f[0] : 1.0f - f[0]) * (by ? f[1] : 1.0f - f[1]) * (bz ? f[2] : 1.0f - f[2]);
  }
}

std::vector<LevelSpec> specs(const std::vector<double>& scales, const std::vector<int64_t>& resolutions,
                             const std::vector<torch::Tensor>& tables, const std::vector<bool>& hashed) {
  std::vector<LevelSpec> out;
  for (size_t l = 0; l < tables.size(); ++l) {
    out.push_back({static_cast<float>(scales[l]), static_cast<uint32_t>(resolutions[l]),
                   static_cast<uint32_t>(tables[l].size(0)), static_cast<bool>(hashed[l])});
  }
  return out;
}

template <typename Fn>
void run_parallel(int64_t count, int64_t threads, Fn fn) {
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, count));
  if (threads == 1) {
    fn(0, count);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t step = (count + threads - 1) / threads;
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t begin = t * step, end = std::min(count, begin + step);
    if (begin < end) pool.emplace_back(fn, begin, end);
  }
  for (auto& th : pool) th.join();
}

}  // namespace

torch::Tensor hashgrid_forward(torch::Tensor unit, std::vector<torch::Tensor> tables, std::vector<double> scales,
                               std::vector<int64_t> resolutions, std::vector<bool> hashed, bool smoothstep,
                               int64_t threads) {
  TORCH_CHECK(unit.dim() == 2 && unit.size(1) == 3 && unit.scalar_type() == torch::kFloat32, "unit must be (N, 3) float32");
  unit = unit.contiguous();
  const auto levels = specs(scales, resolutions, tables, hashed);
  const int64_t n = unit.size(0), L = levels.size(), F = tables[0].size(1);
  std::vector<torch::Tensor> contiguous;
  std::vector<const float*> data;
  for (auto& t : tables) {
    contiguous.push_back(t.contiguous());
    data.push_back(contiguous.back().data_ptr<float>());
  }
  auto out = torch::zeros({n, L * F}, unit.options());
  const float* u = unit.data_ptr<float>();
  float* o = out.data_ptr<float>();
  run_parallel(n, threads, [&](int64_t begin, int64_t end) {
    uint32_t idx[8];
    float w[8];
    // Level-major order keeps one level's table hot in cache while its points stream by.
    for (int64_t l = 0; l < L; ++l) {
      const LevelSpec lv = levels[l];
      const float* table = data[l];
      for (int64_t i = begin; i < end; ++i) {
        cell(lv, u + 3 * i, smoothstep, idx, w);
        float* dst = o + i * L * F + l * F;
        if (F == 2) {
          float a = 0.0f, b = 0.0f;
          for (int c = 0; c < 8; ++c) {
            const float* src = table + 2 * static_cast<int64_t>(idx[c]);
            a += w[c] * src[0];
            b += w[c] * src[1];
          }
          dst[0] = a;
          dst[1] = b;
        } else {
          for (int c = 0; c < 8; ++c) {
            const float* src = table + static_cast<int64_t>(idx[c]) * F;
            for (int64_t k = 0; k < F; ++k) dst[k] += w[c] * src[k];
          }
        }
      }
    }
  });
  return out;
}

std::vector<torch::Tensor> hashgrid_backward(torch::Tensor grad_out, torch::Tensor unit, std::vector<torch::Tensor> tables,
                                             std::vector<double> scales, std::vector<int64_t> resolutions,
                                             std::vector<bool> hashed, bool smoothstep, int64_t threads) {
  grad_out = grad_out.contiguous().to(torch::kFloat32);
  unit = unit.contiguous();
  const auto levels = specs(scales, resolutions, tables, hashed);
  const int64_t n = unit.size(0), L = levels.size(), F = tables[0].size(1);
  std::vector<torch::Tensor> grads;
  std::vector<float*> data;
  for (auto& t : tables) {
    grads.push_back(torch::zeros_like(t));
    data.push_back(grads.back().data_ptr<float>());
  }
  const float* u = unit.data_ptr<float>();
  const float* g = grad_out.data_ptr<float>();
  // Each thread owns whole levels (so no atomics), dealt round-robin to balance cheap
  // dense levels against expensive hashed ones.
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, L));
  auto work = [&](int64_t first) {
    uint32_t idx[8];
    float w[8];
    for (int64_t l = first; l < L; l += threads) {
      const LevelSpec lv = levels[l];
      float* table = data[l];
      for (int64_t i = 0; i < n; ++i) {
        const float* src = g + i * L * F + l * F;
        cell(lv, u + 3 * i, smoothstep, idx, w);
        if (F == 2) {
          const float a = src[0], b = src[1];
          for (int c = 0; c < 8; ++c) {
            float* dst = table + 2 * static_cast<int64_t>(idx[c]);
            dst[0] += w[c] * a;
            dst[1] += w[c] * b;
          }
        } else {
          for (int c = 0; c < 8; ++c) {
            float* dst = table + static_cast<int64_t>(idx[c]) * F;
            for (int64_t k = 0; k < F; ++k) dst[k] += w[c] * src[k];
          }
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& th : pool) th.join();
  return grads;
}
