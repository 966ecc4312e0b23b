//! Memory the host hands data back in, and a count of the guest's own
//! allocations.
//!
//! Every host call that returns data (a header map, a property, a shared-data
//! value) makes the host call back into the module's `proxy_on_memory_allocate`
//! for a buffer. The SDK gives each its own heap allocation, freed after use.
//! Here they come from an arena of reused chunks that is emptied when the
//! proxy enters the module for a new callback, so a request's host calls
//! allocate nothing. A buffer is valid until then: nothing keeps one across
//! callbacks. Callbacks can nest (a local reply runs the response callbacks
//! from inside the request's), so only the outermost entry empties it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Chunk size: a request's headers and properties fit in the first.
const CHUNK: usize = 16 * 1024;

struct Arena {
    chunks: Vec<Vec<u8>>,
    chunk: usize,
    used: usize,
    depth: u32,
}

thread_local! {
    static ARENA: RefCell<Arena> = const {
        RefCell::new(Arena { chunks: Vec::new(), chunk: 0, used: 0, depth: 0 })
    };
}

impl Arena {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        // 8-byte alignment for whatever the host writes.
        let size = size.max(1).div_ceil(8) * 8;
        loop {
            if self.chunk == self.chunks.len() {
                self.chunks.push(vec![0u8; size.max(CHUNK)]);
            }
            let Some(chunk) = self.chunks.get_mut(self.chunk) else {
                return std::ptr::null_mut();
            };
            if chunk.len() - self.used >= size {
                let at = self.used;
                self.used += size;
                return chunk[at..].as_mut_ptr();
            }
            self.chunk += 1;
            self.used = 0;
        }
    }

    fn reset(&mut self) {
        self.chunk = 0;
        self.used = 0;
        // A huge header map once must not keep its memory forever.
        if self.chunks.len() > 4 || self.chunks.iter().any(|c| c.len() > CHUNK) {
            self.chunks.retain(|c| c.len() <= CHUNK);
            self.chunks.truncate(4);
        }
    }
}

/// `proxy_on_memory_allocate`: a buffer in the arena.
pub fn host_alloc(size: usize) -> *mut u8 {
    ARENA.with(|a| match a.try_borrow_mut() {
        Ok(mut a) => a.alloc(size),
        Err(_) => std::ptr::null_mut(),
    })
}

/// Marks the proxy entering the module; the arena is emptied on the
/// outermost entry. Leaving is the guard's drop.
pub fn enter() -> Entered {
    ARENA.with(|a| {
        if let Ok(mut a) = a.try_borrow_mut() {
            if a.depth == 0 {
                a.reset();
            }
            a.depth += 1;
        }
    });
    Entered
}

pub struct Entered;

impl Drop for Entered {
    fn drop(&mut self) {
        ARENA.with(|a| {
            if let Ok(mut a) = a.try_borrow_mut() {
                a.depth = a.depth.saturating_sub(1);
            }
        });
    }
}

/// The system allocator, counting allocations (the harness reads the count
/// through the `hybridmesh_allocations` export to pin the request path's).
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations (and reallocations) since the VM started.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// The guest's linear memory in bytes.
pub fn linear_memory_bytes() -> u64 {
    (core::arch::wasm32::memory_size(0) as u64).saturating_mul(65_536)
}
