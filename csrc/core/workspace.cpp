#include "core/workspace.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#ifdef __linux__
#include <sys/mman.h>
#endif
#ifndef _WIN32
#include <pthread.h>
#endif
#ifdef _WIN32
#include <malloc.h>
#endif

namespace convloc {
namespace {

constexpr size_t kHuge = size_t(2) << 20;

// Cached blocks by size, and the true size of each large block handed out (a cached block may be
// up to twice the request).
struct Cache {
  std::mutex mutex;
  std::multimap<size_t, void*> blocks;
  std::unordered_map<void*, size_t> live;
  size_t bytes = 0;
};
Cache& cache();
Cache* make_cache() {
  Cache* c = new Cache;  // never destroyed: frees may come from static destructors
#ifndef _WIN32
  // A fork while another thread holds the mutex would leave it locked in the child, and the maps
  // half-updated: the mutex is held across fork() and released on both sides.
  pthread_atfork([] { cache().mutex.lock(); }, [] { cache().mutex.unlock(); }, [] { cache().mutex.unlock(); });
#endif
  return c;
}
Cache& cache() {
  static Cache* c = make_cache();
  return *c;
}

size_t rounded(size_t bytes) { return (bytes + kHuge - 1) / kHuge * kHuge; }

// Aligned blocks from the C library (std::aligned_alloc is missing from Windows' and older macOS').
void* aligned_block(size_t bytes, size_t alignment) {
#ifdef _WIN32
  void* p = _aligned_malloc(bytes, alignment);
#else
  void* p = nullptr;
  if (posix_memalign(&p, alignment, bytes) != 0) p = nullptr;
#endif
  if (!p) throw std::bad_alloc();
  return p;
}
void free_block(void* p) {
#ifdef _WIN32
  _aligned_free(p);
#else
  std::free(p);
#endif
}

}  // namespace

void* workspace_alloc(size_t bytes) {
  if (bytes < kWorkspaceMinBytes) {
    return aligned_block(std::max<size_t>(bytes, 1), 64);
  }
  const size_t size = rounded(bytes);
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest cached block that fits without wasting more than half of it.
    auto it = c.blocks.lower_bound(size);
    if (it != c.blocks.end() && it->first <= 2 * size) {
      void* p = it->second;
      c.bytes -= it->first;
      c.live.emplace(p, it->first);
      c.blocks.erase(it);
      return p;
    }
  }
  void* p = aligned_block(size, kHuge);
  advise_huge_pages(p, static_cast<int64_t>(size));
  std::lock_guard<std::mutex> lock(c.mutex);
  c.live.emplace(p, size);
  return p;
}

void workspace_free(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kWorkspaceMinBytes) {
    free_block(p);
    return;
  }
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  const auto at = c.live.find(p);
  const size_t size = at->second;
  c.live.erase(at);
  if (size > kWorkspaceCacheBytes) {  // never cached (and no reason to evict the others)
    free_block(p);
    return;
  }
  // Keep the newest blocks: drop the largest cached ones while over the limit.
  while (!c.blocks.empty() && c.bytes + size > kWorkspaceCacheBytes) {
    auto last = std::prev(c.blocks.end());
    free_block(last->second);
    c.bytes -= last->first;
    c.blocks.erase(last);
  }
  c.blocks.emplace(size, p);
  c.bytes += size;
}

size_t empty_workspace_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  const size_t released = c.bytes;
  for (auto& [size, p] : c.blocks) free_block(p);
  c.blocks.clear();
  c.bytes = 0;
  return released;
}

void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~uintptr_t(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + uintptr_t(bytes)) & ~uintptr_t(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

void hold_workspace_cache_lock(double seconds) {
  std::lock_guard<std::mutex> lock(cache().mutex);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

size_t workspace_cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.bytes;
}

}  // namespace convloc
