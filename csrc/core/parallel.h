// CPU parallelism: a small persistent thread pool with a static split. After a pass its threads spin
// for up to 2 ms before sleeping, as OpenMP runtimes do: waking a sleeping thread takes longer than
// many passes, and back-to-back passes then start at once.
//
// parallel_for cuts [0, n) into chunks whose boundaries depend only on n and
// the grain (never on the thread count), so a kernel that writes each output
// from one chunk gives identical results for any number of threads.
#pragma once

#include <cstdint>
#include <functional>

namespace convloc {

// At most this many threads per hardware thread: more only adds switching (a pass has at most 64
// chunks), and thousands of threads can exceed what the OS allows.
constexpr int kMaxThreadsPerCore = 4;

int get_num_threads();
// n <= 0 restores the default (all cores); n above max_threads() gives max_threads(). Where the OS
// refuses to start that many threads, the pool runs with those it could start.
void set_num_threads(int64_t n);
int max_threads();  // kMaxThreadsPerCore × the hardware threads
// The L2 cache of one core in bytes, as the system reports it (1 MiB where it does not).
int64_t l2_cache_bytes();

// fn(begin, end) is called for each chunk of at least `grain` items.
// Runs inline when n is small, when called from inside another parallel_for,
// or while another Python thread is using the pool.
// When a chunk throws, the chunks not yet started are skipped and the exception is rethrown here.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Interruption (Ctrl-C). A thread that calls kernels may install a check for its calls; the check
// throws to end the kernel. parallel_for runs it on that thread before each chunk (at most every
// kInterruptPollMs), and long sequential loops call poll_interrupt() themselves. Other threads,
// and threads without a check, poll for nothing.
constexpr int kInterruptPollMs = 50;
using InterruptCheck = void (*)();
class InterruptScope {
 public:
  explicit InterruptScope(InterruptCheck check);
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  InterruptCheck previous_;
};
void poll_interrupt();

}  // namespace convloc
