//! After warm-up, pushing samples through the streaming front end allocates nothing.
//!
//! A counting global allocator counts allocations made by this test's own thread only (a
//! thread-local flag), so the test harness's threads cannot disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use audio_jepa::frontend::StreamingFbank;
use audio_jepa::FrontendConfig;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

fn note() {
    // try_with: the thread-locals may already be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: defers every operation to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, COUNT.with(|c| c.get()))
}

#[test]
fn the_counter_sees_allocations() {
    // Guards against a test that cannot fail: a Vec must be counted.
    let (v, n) = counted(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert!(n >= 1);
}

#[test]
fn push_allocates_nothing_after_warm_up() {
    let cfg = FrontendConfig::default();
    let mut s = StreamingFbank::new(&cfg).unwrap();
    let x: Vec<f32> = (0..200_000)
        .map(|i| ((i as f32) * 0.013).sin() * 0.5 + ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
        .collect();
    let mut sink = 0.0f32;
    s.push(&x[..16_000], |_, f| sink += f[7]); // warm-up: first frames
    let chunk_sizes = [1usize, 17, 160, 400, 1024, 4999, 5000, 12_345];
    let (frames, allocs) = counted(|| {
        let mut rest = &x[16_000..];
        let mut frames = 0u64;
        let mut i = 0;
        while !rest.is_empty() {
            let n = chunk_sizes[i % chunk_sizes.len()].min(rest.len());
            s.push(&rest[..n], |_, f| {
                sink += f[0];
                frames += 1;
            });
            rest = &rest[n..];
            i += 1;
        }
        frames
    });
    assert!(frames > 1_000, "{frames} frames");
    assert!(sink.is_finite());
    assert_eq!(allocs, 0, "{allocs} heap allocations in {frames} frames");
}
