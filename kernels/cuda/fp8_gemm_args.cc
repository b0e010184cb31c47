// CheckFp8GemmArgs (fp8_gemm.h): the argument checks every FP8 GEMM launcher runs. Plain C++ with
// no kernel behind it, so host code that plans launches (the sm90 plan, its emulation test) links it
// without the kernels.
#include "absl/strings/str_cat.h"
#include "kernels/cuda/fp8_gemm.h"

namespace fp8serve::cuda {

namespace {

absl::Status Invalid(const Fp8GemmArgs& a, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("FP8 GEMM ", a.m, "x", a.n, "x", a.k, ": ", what));
}

}  // namespace

absl::Status CheckFp8GemmArgs(const Fp8GemmArgs& a) {
  if (a.m < 1 || a.n < 1 || a.k < 1) return Invalid(a, "empty shape");
  if (a.m > kMaxGemmDim || a.n > kMaxGemmDim || a.k > kMaxGemmDim) {
    return Invalid(a, absl::StrCat("a dimension above ", kMaxGemmDim, " (the launch arithmetic is int)"));
  }
  if (a.n % kGemmBlockK != 0 || a.k % kGemmBlockK != 0) {
    return Invalid(a, absl::StrCat("n and k must be padded to multiples of ", kGemmBlockK));
  }
  if (a.a == nullptr || a.a_scales == nullptr) return Invalid(a, "A or its scales are null");
  if (a.b == nullptr || a.b_scales == nullptr) return Invalid(a, "B or its scales are null");
  if (a.d == nullptr) return Invalid(a, "D is null");
  if (a.b_layout != WeightLayout::kRowMajor && a.b_layout != WeightLayout::kTiled128) {
    return Invalid(a, "unknown weight layout");
  }
  if (a.output == GemmOutput::kE4M3) {
    if (a.d_scales == nullptr) return Invalid(a, "E4M3 output needs d_scales");
    if (a.n_store != a.n) return Invalid(a, "E4M3 output writes every padded column: n_store must equal n");
  } else if (a.n_store < 1 || a.n_store > a.n) {
    return Invalid(a, absl::StrCat("n_store ", a.n_store, " outside [1, ", a.n, "]"));
  }
  if (a.ldd < a.n_store) return Invalid(a, absl::StrCat("ldd ", a.ldd, " < n_store ", a.n_store));
  return absl::OkStatus();
}

}  // namespace fp8serve::cuda
