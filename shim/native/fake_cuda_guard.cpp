// A DeviceGuardImplInterface for DeviceType::CUDA, for CPU-only builds of libtorch.
//
// A CPU build leaves the CUDA slot of c10's device-guard registry empty, so C++ paths that build
// a CUDA device guard before any Python code runs (Tensor.copy_, .to(), nn.Module init) fail with
// "PyTorch is not linked with support for cuda devices". This guard keeps a per-thread current
// device and current stream, reports the virtual device count, and treats events and syncs as
// no-ops: revati's Python layer (revati.shim) models their timing.
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/Stream.h>

#include <atomic>

namespace {

constexpr int kMaxDevices = 64;
thread_local c10::DeviceIndex tls_device = 0;
thread_local c10::StreamId tls_stream[kMaxDevices] = {0};
std::atomic<int> g_device_count{1};
std::atomic<c10::StreamId> g_next_stream{1};

c10::DeviceIndex clamp_index(c10::DeviceIndex i) {
  return (i < 0 || i >= kMaxDevices) ? tls_device : i;
}

struct VirtualCudaGuard final : public c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return c10::DeviceType::CUDA; }
  c10::Device exchangeDevice(c10::Device d) const override {
    c10::Device old(c10::DeviceType::CUDA, tls_device);
    if (d.index() >= 0) tls_device = clamp_index(d.index());
    return old;
  }
  c10::Device getDevice() const override { return c10::Device(c10::DeviceType::CUDA, tls_device); }
  void setDevice(c10::Device d) const override {
    if (d.index() >= 0) tls_device = clamp_index(d.index());
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0 && d.index() < kMaxDevices) tls_device = d.index();
  }
  c10::Stream getStream(c10::Device d) const override {
    auto i = clamp_index(d.index());
    return c10::Stream(c10::Stream::UNSAFE, c10::Device(c10::DeviceType::CUDA, i), tls_stream[i]);
  }
  c10::Stream getDefaultStream(c10::Device d) const override {
    return c10::Stream(c10::Stream::DEFAULT, c10::Device(c10::DeviceType::CUDA, clamp_index(d.index())));
  }
  c10::Stream getNewStream(c10::Device d, int /*priority*/) const override {
    return c10::Stream(c10::Stream::UNSAFE, c10::Device(c10::DeviceType::CUDA, clamp_index(d.index())),
                       g_next_stream.fetch_add(1));
  }
  c10::Stream exchangeStream(c10::Stream s) const override {
    auto i = clamp_index(s.device_index());
    auto old = tls_stream[i];
    tls_stream[i] = s.id();
    return c10::Stream(c10::Stream::UNSAFE, c10::Device(c10::DeviceType::CUDA, i), old);
  }
  c10::DeviceIndex deviceCount() const noexcept override {
    return static_cast<c10::DeviceIndex>(g_device_count.load());
  }
  void record(void**, const c10::Stream&, const c10::DeviceIndex, const c10::EventFlag) const override {}
  void block(void*, const c10::Stream&) const override {}
  bool queryEvent(void*) const override { return true; }
  void destroyEvent(void*, const c10::DeviceIndex) const noexcept override {}
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
};

VirtualCudaGuard g_guard;

}  // namespace

extern "C" int revati_install_cuda_guard(int device_count) {
  g_device_count.store(device_count);
  c10::impl::device_guard_impl_registry[static_cast<size_t>(c10::DeviceType::CUDA)].store(&g_guard);
  return 0;
}

extern "C" int revati_current_device() { return tls_device; }

extern "C" void revati_set_current_device(int index) {
  if (index >= 0 && index < kMaxDevices) tls_device = static_cast<c10::DeviceIndex>(index);
}
