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

int get_num_threads();
void set_num_threads(int n);  // n <= 0 restores the default (all cores)

// fn(begin, end) is called for each chunk of at least `grain` items.
// Runs inline when n is small, when called from inside another parallel_for,
// or while another Python thread is using the pool.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace convloc
