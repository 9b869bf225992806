#include "core/parallel.h"

#ifndef _WIN32
#include <pthread.h>  // pthread_atfork: Windows has no fork
#include <unistd.h>   // sysconf
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace convloc {
namespace {

int default_threads() { return std::max(1u, std::thread::hardware_concurrency()); }

// One job at a time; the caller works on it too.
class Pool {
 public:
  // threads - 1 workers, or as many as the OS lets us start.
  explicit Pool(int threads) : wanted_(threads) {
    for (int i = 1; i < threads; ++i) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (const std::exception&) {
        break;
      }
    }
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int wanted() const { return wanted_; }

  void run(int64_t chunks, const std::function<void(int64_t)>& chunk_fn) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &chunk_fn;
      chunks_ = chunks;
      next_ = 0;
      done_ = 0;
      failed_ = false;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    drain();
    // Wait for every chunk and for every worker to leave this job, so that no
    // worker can touch the next job's counters with this job's state.
    const auto finished = [this] { return done_.load() == chunks_ && active_.load() == 0; };
    spin_until(finished);
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, finished);
    job_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  // Waking a thread from a condition variable takes longer than many parallel passes (and a kernel
  // makes dozens of them back to back): a thread about to sleep spins for up to kSpin first, as
  // OpenMP runtimes do.
  static constexpr std::chrono::microseconds kSpin{2000};
  template <typename Pred>
  static void spin_until(const Pred& ready) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (!ready()) {
      for (int i = 0; i < 64; ++i) pause();
      if (std::chrono::steady_clock::now() > until) return;
    }
  }
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  void drain() {
    for (;;) {
      const int64_t c = next_.fetch_add(1);
      if (c >= chunks_) return;
      if (!failed_.load(std::memory_order_relaxed)) {  // after an error, the rest is skipped
        try {
          (*job_)(c);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mutex_);
          if (!error_) error_ = std::current_exception();
          failed_ = true;
        }
      }
      if (done_.fetch_add(1) + 1 == chunks_) {
        std::lock_guard<std::mutex> lock(mutex_);
        finished_.notify_all();
      }
    }
  }
  void work() {
    uint64_t seen = 0;
    for (;;) {
      spin_until([&] { return stop_.load() || generation_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_.load() || (generation_.load() != seen && job_ != nullptr); });
        if (stop_) return;
        seen = generation_.load();
        ++active_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) finished_.notify_all();
    }
  }

  const int wanted_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int> active_{0};
  std::atomic<int64_t> next_{0}, done_{0};
  std::exception_ptr error_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false}, failed_{false};
};

std::mutex pool_mutex;  // held by the Python thread that owns the pool
Pool* pool = nullptr;   // replaced under pool_mutex only; left alone at exit, where a call may be running
std::atomic<int> requested_threads{0};
thread_local bool inside_parallel = false;
thread_local InterruptCheck interrupt_check = nullptr;
thread_local std::chrono::steady_clock::time_point next_interrupt_poll;

#ifndef _WIN32
void forget_pool_in_child() {
  // The workers do not exist in a forked child; leak the old pool and start afresh.
  pool = nullptr;
  new (&pool_mutex) std::mutex();
}
#endif

Pool& get_pool() {
#ifndef _WIN32
  static bool registered = (pthread_atfork(nullptr, nullptr, forget_pool_in_child), true);
  (void)registered;
#endif
  const int want = get_num_threads();
  if (!pool || pool->wanted() != want) {
    delete pool;
    pool = new Pool(want);
  }
  return *pool;
}

}  // namespace

int max_threads() { return kMaxThreadsPerCore * default_threads(); }

int get_num_threads() {
  const int n = requested_threads.load();
  return n > 0 ? n : default_threads();
}

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (reported > 0) return int64_t(reported);
#endif
    return int64_t(1) << 20;
  }();
  return bytes;
}

// The next parallel_for that gets the pool resizes it (not this call: the pool may be in use).
void set_num_threads(int64_t n) { requested_threads = static_cast<int>(std::clamp<int64_t>(n, 0, max_threads())); }

InterruptScope::InterruptScope(InterruptCheck check) : previous_(interrupt_check) {
  interrupt_check = check;
  next_interrupt_poll = std::chrono::steady_clock::now() + std::chrono::milliseconds(kInterruptPollMs);
}
InterruptScope::~InterruptScope() { interrupt_check = previous_; }

void poll_interrupt() {
  if (!interrupt_check) return;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_interrupt_poll) return;
  next_interrupt_poll = now + std::chrono::milliseconds(kInterruptPollMs);
  interrupt_check();
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // At most 64 chunks, sized independently of the thread count.
  const int64_t chunk = std::max(grain, (n + 63) / 64);
  const int64_t chunks = (n + chunk - 1) / chunk;
  auto run_chunk = [&](int64_t c) {
    poll_interrupt();
    fn(c * chunk, std::min(n, (c + 1) * chunk));
  };
  std::unique_lock<std::mutex> lock(pool_mutex, std::defer_lock);
  if (chunks == 1 || inside_parallel || get_num_threads() == 1 || !lock.try_lock()) {
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c);
    return;
  }
  inside_parallel = true;
  struct Reset {
    ~Reset() { inside_parallel = false; }
  } reset;
  std::function<void(int64_t)> chunk_fn = [&](int64_t c) {
    const bool was = inside_parallel;
    inside_parallel = true;
    run_chunk(c);
    inside_parallel = was;
  };
  get_pool().run(chunks, chunk_fn);
}

}  // namespace convloc
