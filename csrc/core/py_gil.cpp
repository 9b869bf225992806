#include "core/py_gil.h"

#include <chrono>
#include <thread>

#if defined(__GLIBCXX__) && defined(__linux__)
#include <cxxabi.h>  // abi::__forced_unwind: glibc's pthread_exit unwinds C++ frames
#define CONVLOC_FORCED_UNWIND 1
#endif

namespace convloc {
namespace {

unsigned long main_thread = 0;
thread_local PyThreadState* released_state = nullptr;  // the calling thread's, while in a kernel

// Runs the pending signal handlers (with the GIL); an exception one raises ends the kernel.
void check_signals() {
  PyEval_RestoreThread(released_state);
  if (PyErr_CheckSignals() != 0) {
    py::error_already_set error;
    released_state = PyEval_SaveThread();
    throw error;
  }
  released_state = PyEval_SaveThread();
}

#ifdef CONVLOC_FORCED_UNWIND
[[noreturn]] void park() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}
#endif

}  // namespace

void remember_main_thread() {
  main_thread = py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>();
}

ReleaseGil::ReleaseGil() {
  const bool main = PyThread_get_thread_ident() == main_thread;
  state_ = released_state = PyEval_SaveThread();
  if (main) interrupts_.emplace(&check_signals);
}

ReleaseGil::~ReleaseGil() {
  interrupts_.reset();
  released_state = nullptr;
#ifdef CONVLOC_FORCED_UNWIND
  try {
    PyEval_RestoreThread(state_);
  } catch (abi::__forced_unwind&) {
    park();  // never returns, so the unwinding never reaches the end of this handler
  }
#else
  PyEval_RestoreThread(state_);  // elsewhere pthread_exit does not unwind C++ frames
#endif
}

}  // namespace convloc
