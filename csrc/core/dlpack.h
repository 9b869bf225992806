// DLPack on the C++ side: a DLTensor (declared in the public header, include/convloc/convloc.h) as a TensorView,
// and the managed tensors that Python's DLPack capsules carry.
#pragma once

#include <cstdint>

#include "convloc/convloc.h"
#include "core/tensor.h"

namespace convloc {

// The capsule "dltensor" (DLPack before 1.0).
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};

// The capsule "dltensor_versioned" (DLPack 1.0 and later), asked for with __dlpack__(max_version=(1, 0)).
struct DLPackVersion {
  uint32_t major, minor;
};
struct DLManagedTensorVersioned {
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags;
  DLTensor dl_tensor;
};
constexpr uint64_t kDLFlagReadOnly = 1;  // flags: the producer's memory must not be written

// t as a view named `name`: the data at its byte offset, dtype and device as convloc knows them (else Other),
// strides computed where t has none. Checks nothing (check_array does).
TensorView view_of(const DLTensor& t, const char* name, bool readonly = false);

}  // namespace convloc
