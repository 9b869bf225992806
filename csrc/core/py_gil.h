// Releasing the GIL around a kernel: pybind11's gil_scoped_release, and two things more.
//
// Ctrl-C: on the main thread, the kernel's passes look for signals every kInterruptPollMs (taking the
// GIL back for a moment, core/parallel.h); a KeyboardInterrupt, or whatever a signal handler
// raises, ends the kernel and is raised by the call.
//
// Interpreter exit: CPython before 3.14 ends a thread that wants the GIL back while the interpreter
// finalises with pthread_exit, whose unwinding through this (noexcept) destructor aborts the
// process. A thread coming back from a kernel at exit is parked instead, as CPython 3.14 does.
//
// Only the bindings release a GIL: callers that hold none (the C API, the XLA FFI handlers) install
// no interrupt check, and their calls run to the end.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>

#include "core/parallel.h"

namespace convloc {

namespace py = pybind11;

class ReleaseGil {
 public:
  ReleaseGil();
  ~ReleaseGil();
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  PyThreadState* state_;
  std::optional<InterruptScope> interrupts_;
};

// Called once by the module's initialisation (with the GIL): which thread receives signals.
void remember_main_thread();

}  // namespace convloc
