// Large scratch memory (the dense CRF's [N, L] buffers, the lattice's tables: tens of MB per call)
// from a process-wide cache. Fresh pages cost a fault and a zeroing on first touch, comparable to
// the work a kernel then does in them, so blocks freed by one call are kept for the next (like
// PyTorch's caching allocator), up to kWorkspaceCacheBytes in all.
// empty_workspace_cache() gives them back to the system.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>
#include <vector>

namespace convloc {

// Blocks smaller than this come from malloc directly (the cache is for what fresh pages slow down).
constexpr size_t kWorkspaceMinBytes = size_t(1) << 20;
constexpr size_t kWorkspaceCacheBytes = size_t(512) << 20;

// A block of at least `bytes` bytes, 64-byte aligned (on Linux, large ones in transparent huge
// pages); contents undefined. Throws std::bad_alloc.
void* workspace_alloc(size_t bytes);
// Returns a block from workspace_alloc (with the same byte count) to the cache.
void workspace_free(void* p, size_t bytes) noexcept;
// Frees every cached block; returns the bytes released.
size_t empty_workspace_cache();
// Bytes currently held by the cache (not in use).
size_t workspace_cached_bytes();
// Test hook: holds the cache's lock for `seconds`, as a call that allocates does for an instant
// (a fork meanwhile must still give a child whose calls can allocate).
void hold_workspace_cache_lock(double seconds);
// Asks Linux for transparent huge pages over the whole 2 MiB pages inside [p, p + bytes): filling a
// fresh buffer of tens of MB then costs hundreds of page faults instead of tens of thousands
// (honoured when the system's THP mode is "madvise" or "always"). Advice only; a no-op elsewhere.
void advise_huge_pages(void* p, int64_t bytes);

// std::vector<T, WorkspaceAllocator<T>>: a vector whose large buffers come from the cache. resize()
// default-initialises: trivial elements are left unwritten (every user fills what it reads).
template <typename T>
struct WorkspaceAllocator {
  using value_type = T;
  WorkspaceAllocator() = default;
  template <typename U>
  WorkspaceAllocator(const WorkspaceAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(workspace_alloc(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { workspace_free(p, n * sizeof(T)); }
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <typename U>
  bool operator==(const WorkspaceAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const WorkspaceAllocator<U>&) const {
    return false;
  }
};

template <typename T>
using WorkspaceVector = std::vector<T, WorkspaceAllocator<T>>;

}  // namespace convloc
