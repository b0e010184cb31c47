/* A stand-in for libnvidia-ml.so.1 with NVML's C ABI, for testing the GPU gauges where there is no
 * GPU: two devices, "GPU-fake-0" (37% busy, 1 GiB of 80 GiB used) and "GPU-fake-1" (100% busy,
 * 2 GiB used). FAKE_NVML_INIT_ERROR=<code> in the environment makes nvmlInit_v2 fail with it. */
#include <stdio.h>
#include <stdlib.h>

typedef struct {
  unsigned int gpu;
  unsigned int memory;
} nvmlUtilization_t;

typedef struct {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
} nvmlMemory_t;

static int devices[2];

static int Index(void* h) { return (int)((int*)h - devices); }

int nvmlInit_v2(void) {
  const char* e = getenv("FAKE_NVML_INIT_ERROR");
  return e != NULL ? atoi(e) : 0;
}
int nvmlShutdown(void) { return 0; }
const char* nvmlErrorString(int r) { return r == 9 ? "Driver Not Loaded" : "Unknown Error"; }
int nvmlDeviceGetCount_v2(unsigned int* n) {
  *n = 2;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void** h) {
  if (i >= 2) return 2; /* NVML_ERROR_INVALID_ARGUMENT */
  *h = &devices[i];
  return 0;
}
int nvmlDeviceGetUUID(void* h, char* buf, unsigned int len) {
  snprintf(buf, len, "GPU-fake-%d", Index(h));
  return 0;
}
int nvmlDeviceGetUtilizationRates(void* h, nvmlUtilization_t* u) {
  u->gpu = Index(h) == 0 ? 37 : 100;
  u->memory = 5;
  return 0;
}
int nvmlDeviceGetMemoryInfo(void* h, nvmlMemory_t* m) {
  m->total = 80ull << 30;
  m->used = (unsigned long long)(Index(h) + 1) << 30;
  m->free = m->total - m->used;
  return 0;
}
