// The NCCL communicator (see elastic/cuda/comm_nccl.h).
#include "elastic/cuda/comm_nccl.h"

#include <nccl.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <string>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic {
namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw Error(std::string("NCCL: ") + what + ": " + ncclGetErrorString(r));
}

// The group's NCCL communicators. A rank that fails aborts all of them (ncclCommAbort ends
// the operations the other ranks wait in), once; an aborted communicator is not destroyed again.
struct NcclGroup {
  std::vector<ncclComm_t> comms;
  std::mutex mutex;
  std::atomic<bool> aborted{false};  // read by the ranks without the mutex
  void abort() {
    std::lock_guard<std::mutex> lock(mutex);
    if (aborted) return;
    aborted = true;
    for (ncclComm_t c : comms) ncclCommAbort(c);
  }
  ~NcclGroup() {
    if (!aborted)
      for (ncclComm_t c : comms) ncclCommDestroy(c);
  }
};

class NcclComm final : public TpComm {
 public:
  NcclComm(std::shared_ptr<NcclGroup> group, int device, int rank)
      : group_(std::move(group)),
        comm_(group_->comms[size_t(rank)]),
        device_(device),
        rank_(rank),
        world_(int(group_->comms.size())) {}
  ~NcclComm() override {
    cudaSetDevice(device_);  // destructors do not throw: errors here are left to the driver
    if (buf_) cudaFree(buf_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  int rank() const override { return rank_; }
  int world() const override { return world_; }

  // Host x -> the rank's device buffer -> ncclAllReduce (sum, in place) -> host x. NCCL gives
  // every rank the same reduced values.
  void all_reduce_sum(float* x, int64_t n) override {
    if (group_->aborted)
      throw TpGroupAborted("NCCL: the group of rank " + std::to_string(rank_) + " was aborted");
    ELASTIC_CUDA_CHECK(cudaSetDevice(device_));
    if (!stream_) ELASTIC_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    if (bytes > cap_) {
      if (buf_) ELASTIC_CUDA_CHECK(cudaFree(buf_));
      buf_ = nullptr;
      ELASTIC_CUDA_CHECK(cudaMalloc(&buf_, bytes));
      cap_ = bytes;
    }
    ELASTIC_CUDA_CHECK(cudaMemcpyAsync(buf_, x, bytes, cudaMemcpyHostToDevice, stream_));
    nccl_check(
        ncclAllReduce(buf_, buf_, static_cast<size_t>(n), ncclFloat32, ncclSum, comm_, stream_),
        "ncclAllReduce");
    ELASTIC_CUDA_CHECK(cudaMemcpyAsync(x, buf_, bytes, cudaMemcpyDeviceToHost, stream_));
    ELASTIC_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void abort() override { group_->abort(); }

 private:
  std::shared_ptr<NcclGroup> group_;
  ncclComm_t comm_;
  int device_, rank_, world_;
  cudaStream_t stream_ = nullptr;
  float* buf_ = nullptr;
  size_t cap_ = 0;
};

}  // namespace

std::vector<std::shared_ptr<TpComm>> tp_group_nccl(int world) {
  // Never NVLink multicast on the lent machines (the device README): set before NCCL reads it.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  const int gpus = cuda::cuda_device_count();
  if (world < 1 || world > gpus)
    throw Error("communicator nccl: a world of " + std::to_string(world) + " needs " +
                std::to_string(world) + " GPUs (one a rank); this machine has " +
                std::to_string(gpus));
  auto group = std::make_shared<NcclGroup>();
  std::vector<ncclComm_t> comms(static_cast<size_t>(world));
  std::vector<int> devices(static_cast<size_t>(world));
  std::iota(devices.begin(), devices.end(), 0);
  nccl_check(ncclCommInitAll(comms.data(), world, devices.data()), "ncclCommInitAll");
  group->comms = comms;
  std::vector<std::shared_ptr<TpComm>> out;
  for (int r = 0; r < world; ++r)
    out.push_back(std::make_shared<NcclComm>(group, devices[size_t(r)], r));
  return out;
}

void tp_group_nccl_register() { tp_group_register("nccl", tp_group_nccl); }

}  // namespace elastic
