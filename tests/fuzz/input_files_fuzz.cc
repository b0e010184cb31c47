// Fuzz target: the data files fp8serve-client, fp8serve-eval and fp8serve-quantize read (.npy, IDX
// plain or gzip, CSV, label files). Each reader either refuses the input or returns values whose
// counts match the shape it reports.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "client/cli/input_files.h"
#include "tests/fuzz/fuzz_support.h"
#include "tools/datasets/idx.h"

namespace {

using fp8serve::fuzz::Fail;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp8serve;
  const std::string path = fuzz::WriteScratchFile("input", data, size);

  for (int64_t limit : {int64_t{0}, int64_t{2}}) {
    if (absl::StatusOr<client::InputRows> r = client::ReadInputRows(path, limit, 0.5f); r.ok()) {
      if (r->rows < 0 || r->width < 0 || static_cast<size_t>(r->rows * r->width) != r->values.size()) {
        Fail("rows x width does not match the values read");
      }
      if (limit > 0 && r->rows > limit) Fail("more rows than the limit");
    }
    if (absl::StatusOr<std::vector<int>> l = client::ReadLabels(path, limit); l.ok()) {
      if (limit > 0 && static_cast<int64_t>(l->size()) > limit) Fail("more labels than the limit");
    }
  }
  if (absl::StatusOr<IdxArray> a = ReadIdx(path); a.ok()) {
    size_t n = 1;
    for (uint32_t d : a->dims) n *= d;
    if (n != a->data.size()) Fail("IDX dims do not match the data read");
  }
  int images = 0, pixels = 0;
  if (absl::StatusOr<std::vector<float>> x = ReadIdxImagesAsFloat(path, &images, &pixels, 0); x.ok()) {
    if (static_cast<size_t>(images) * static_cast<size_t>(pixels) != x->size()) Fail("IDX images do not match the pixels read");
  }
  (void)ReadIdxLabels(path, 0);
  return 0;
}
