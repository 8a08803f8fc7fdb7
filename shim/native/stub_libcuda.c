// A stand-in libcuda.so.1 for machines without an NVIDIA driver.
//
// CUDA builds of extension modules (vLLM's kernels, FlashAttention, ...) name libcuda.so.1 as a
// needed library, so without a driver they cannot even be imported, although under revati none
// of their kernels ever runs. revati.shim.native.stub_libcuda() builds this library (soname
// libcuda.so.1) and loads it RTLD_GLOBAL before such modules are imported; the dynamic linker
// then resolves their libcuda dependency to it. Every entry point reports
// CUDA_ERROR_NO_DEVICE (100): code that really tries to use the driver learns there is none.
// The list holds the driver symbols vLLM 0.32's CUDA extensions import, plus the usual
// initialisation calls.

#define CUDA_ERROR_NO_DEVICE 100

static const char kNoDevice[] = "revati: no CUDA driver (virtual GPU)";

int cuGetErrorString(int error, const char **str) {
  if (str) *str = kNoDevice;
  return 0;
}

int cuCtxCreate_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuCtxDestroy_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuCtxGetCurrent() { return CUDA_ERROR_NO_DEVICE; }
int cuCtxSetCurrent() { return CUDA_ERROR_NO_DEVICE; }
int cuCtxSynchronize() { return CUDA_ERROR_NO_DEVICE; }
int cuDeviceGet() { return CUDA_ERROR_NO_DEVICE; }
int cuDeviceGetAttribute() { return CUDA_ERROR_NO_DEVICE; }
int cuDeviceGetCount(int *count) {
  if (count) *count = 0;
  return CUDA_ERROR_NO_DEVICE;
}

int cuDeviceGetName() { return CUDA_ERROR_NO_DEVICE; }
int cuDevicePrimaryCtxGetState() { return CUDA_ERROR_NO_DEVICE; }
int cuDevicePrimaryCtxRelease_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuDevicePrimaryCtxRetain() { return CUDA_ERROR_NO_DEVICE; }
int cuDeviceTotalMem_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuDriverGetVersion(int *version) {
  if (version) *version = 0;
  return CUDA_ERROR_NO_DEVICE;
}

int cuFuncGetAttribute() { return CUDA_ERROR_NO_DEVICE; }
int cuFuncGetName() { return CUDA_ERROR_NO_DEVICE; }
int cuFuncSetAttribute() { return CUDA_ERROR_NO_DEVICE; }
int cuFuncSetCacheConfig() { return CUDA_ERROR_NO_DEVICE; }
int cuGetErrorName(int error, const char **str) {
  if (str) *str = "CUDA_ERROR_NO_DEVICE";
  return 0;
}

int cuGetExportTable() { return CUDA_ERROR_NO_DEVICE; }
int cuGetProcAddress_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuInit() { return CUDA_ERROR_NO_DEVICE; }
int cuKernelGetFunction() { return CUDA_ERROR_NO_DEVICE; }
int cuLaunchCooperativeKernel() { return CUDA_ERROR_NO_DEVICE; }
int cuLaunchKernel() { return CUDA_ERROR_NO_DEVICE; }
int cuLaunchKernelEx() { return CUDA_ERROR_NO_DEVICE; }
int cuLibraryGetKernel() { return CUDA_ERROR_NO_DEVICE; }
int cuLibraryLoadData() { return CUDA_ERROR_NO_DEVICE; }
int cuLibraryUnload() { return CUDA_ERROR_NO_DEVICE; }
int cuLinkAddData_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuLinkComplete() { return CUDA_ERROR_NO_DEVICE; }
int cuLinkCreate_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuMemAddressFree() { return CUDA_ERROR_NO_DEVICE; }
int cuMemAddressReserve() { return CUDA_ERROR_NO_DEVICE; }
int cuMemAlloc_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuMemCreate() { return CUDA_ERROR_NO_DEVICE; }
int cuMemFree_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuMemGetAllocationGranularity() { return CUDA_ERROR_NO_DEVICE; }
int cuMemMap() { return CUDA_ERROR_NO_DEVICE; }
int cuMemRelease() { return CUDA_ERROR_NO_DEVICE; }
int cuMemSetAccess() { return CUDA_ERROR_NO_DEVICE; }
int cuMemUnmap() { return CUDA_ERROR_NO_DEVICE; }
int cuMemcpyDtoH_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuMemcpyHtoD_v2() { return CUDA_ERROR_NO_DEVICE; }
int cuModuleGetFunction() { return CUDA_ERROR_NO_DEVICE; }
int cuModuleLoad() { return CUDA_ERROR_NO_DEVICE; }
int cuModuleLoadData() { return CUDA_ERROR_NO_DEVICE; }
int cuModuleLoadDataEx() { return CUDA_ERROR_NO_DEVICE; }
int cuModuleUnload() { return CUDA_ERROR_NO_DEVICE; }
int cuOccupancyMaxActiveBlocksPerMultiprocessor() { return CUDA_ERROR_NO_DEVICE; }
int cuPointerGetAttribute() { return CUDA_ERROR_NO_DEVICE; }
int cuStreamCreate() { return CUDA_ERROR_NO_DEVICE; }
int cuStreamSynchronize() { return CUDA_ERROR_NO_DEVICE; }
int cuTensorMapEncodeTiled() { return CUDA_ERROR_NO_DEVICE; }
