#include "core/ffi.h"

#include <cstring>
#include <stdexcept>

#include "core/check.h"
#include "core/cuda_runtime.h"

namespace convloc::ffi {
namespace {

DType dtype_of(xf::DataType t) {
  switch (t) {
    case xf::DataType::F32:
      return DType::Float32;
    case xf::DataType::F64:
      return DType::Float64;
    case xf::DataType::F16:
      return DType::Float16;
    case xf::DataType::BF16:
      return DType::BFloat16;
    case xf::DataType::S64:
      return DType::Int64;
    case xf::DataType::S32:
      return DType::Int32;
    case xf::DataType::S16:
      return DType::Int16;
    case xf::DataType::S8:
      return DType::Int8;
    case xf::DataType::U8:
      return DType::UInt8;
    case xf::DataType::PRED:
      return DType::Bool;
    default:
      return DType::Other;
  }
}

Operand operand(const xf::AnyBuffer& b, int rank, const char* name) {
  const auto dims = b.dimensions();
  return {b.untyped_data(),
          dtype_of(b.element_type()),
          static_cast<int64_t>(xf::ByteWidth(b.element_type())),
          std::vector<int64_t>(dims.begin(), dims.end()),
          rank,
          name};
}

}  // namespace

Operand arg(const xf::AnyBuffer& buffer, int rank, const char* name) { return operand(buffer, rank, name); }
Operand ret(xf::Result<xf::AnyBuffer> buffer, int rank, const char* name) { return operand(*buffer, rank, name); }

void for_each_item(const Place& place, const std::vector<Operand>& operands,
                   const std::function<void(const std::vector<TensorView>&)>& fn) {
  const Operand& first = operands.at(0);
  const size_t batch_rank = first.dims.size() > size_t(first.rank) ? first.dims.size() - first.rank : 0;
  const std::vector<int64_t> batch(first.dims.begin(), first.dims.begin() + batch_rank);
  int64_t items = 1;
  for (int64_t s : batch) items *= s;
  // Per operand: its item's view, and its element offset per batch index (0 where it is shared).
  std::vector<TensorView> views(operands.size());
  std::vector<std::vector<int64_t>> steps(operands.size(), std::vector<int64_t>(batch_rank, 0));
  for (size_t i = 0; i < operands.size(); ++i) {
    const Operand& o = operands[i];
    if (o.dims.size() < batch_rank)
      fail_value(o.name, ": expected the ", batch_rank, " batch dimensions of the call in front of its own");
    TensorView& v = views[i];
    v.data = o.data;
    v.dtype = o.dtype;
    v.device = place.device;
    v.name = o.name;
    v.shape.assign(o.dims.begin() + batch_rank, o.dims.end());
    v.strides.resize(v.shape.size());
    int64_t numel = 1;
    for (size_t d = v.shape.size(); d-- > 0;) {
      v.strides[d] = numel;
      numel *= v.shape[d];
    }
    for (size_t d = batch_rank; d-- > 0;) {
      if (o.dims[d] != batch[d] && o.dims[d] != 1)
        fail_value(o.name, ": batch dimension ", d, " has size ", o.dims[d], ", expected ", batch[d], " or 1");
      steps[i][d] = o.dims[d] == 1 ? 0 : numel;
      numel *= o.dims[d];
    }
  }
  std::vector<TensorView> item = views;
  for (int64_t n = 0; n < items; ++n) {
    for (size_t i = 0; i < operands.size(); ++i) {
      int64_t offset = 0, rest = n;
      for (size_t d = batch_rank; d-- > 0;) {
        offset += (rest % batch[d]) * steps[i][d];
        rest /= batch[d];
      }
      item[i].data = static_cast<char*>(views[i].data) + offset * operands[i].item_bytes;
    }
    fn(item);
  }
}

xf::Error guarded(const std::function<void()>& fn) noexcept {
  try {
    fn();
    return xf::Error::Success();
  } catch (const std::invalid_argument& e) {  // ValueError, TypeError
    return xf::Error::InvalidArgument(e.what());
  } catch (const std::exception& e) {
    return xf::Error::Internal(e.what());
  } catch (...) {
    return xf::Error::Internal("convloc: unknown error");
  }
}

void write_int64(const TensorView& out, int64_t value, const Place& place) {
  check_shape(out, {}, "[] (a scalar)");
  check_dtype(out, DType::Int64);
#ifdef CONVLOC_WITH_CUDA
  if (place.device == DeviceType::CUDA) {
    cuda_copy_to_device(out.data, &value, sizeof(value), place.stream);
    return;
  }
#endif
  (void)place;
  std::memcpy(out.data, &value, sizeof(value));
}

}  // namespace convloc::ffi
