//! A second thread for the engine, without allocating per call: one persistent helper that runs
//! the other half of a split operation ([`Helper::join`], like `rayon::join` for exactly two
//! halves), and a raw output view so the halves can fill disjoint columns of one matrix.
//!
//! The helper spins for a millisecond after each job (the next one follows within microseconds
//! inside a forward pass) and then parks, so an idle stream between hops costs no CPU. Waking a
//! parked thread can take milliseconds (about 10 ms measured on this repository's 2-vCPU
//! virtual machine), and spinning longer to avoid it steals the core the audio and UI threads
//! need (measured: hops stretched to 4-12 ms, the scheduler's slices), so the live pipeline
//! measures both thread counts and keeps the faster (`stream::worker`).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How long the helper spins after a job before parking.
const SPIN: std::time::Duration = std::time::Duration::from_millis(1);
/// How long an idle helper parks between checks (a join wakes it at once with `unpark`).
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

type Task = *const (dyn Fn() + Sync);

struct Shared {
    task: UnsafeCell<Option<Task>>,
    posted: AtomicU64,
    finished: AtomicU64,
    stop: AtomicBool,
    panicked: AtomicBool,
}

// SAFETY: `task` is written only by the owning thread while the helper is idle (before `posted`
// is released) and read by the helper only after acquiring `posted`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// One helper thread.
pub struct Helper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Helper")
    }
}

impl Helper {
    pub fn new() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            task: UnsafeCell::new(None),
            posted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ajepa-engine".into())
            .spawn(move || {
                let mut seen = 0u64;
                loop {
                    let spin_until = std::time::Instant::now() + SPIN;
                    while s.posted.load(Ordering::Acquire) == seen {
                        if s.stop.load(Ordering::Acquire) {
                            return;
                        }
                        if std::time::Instant::now() < spin_until {
                            for _ in 0..64 {
                                std::hint::spin_loop();
                            }
                        } else {
                            std::thread::park_timeout(IDLE_POLL);
                        }
                    }
                    seen += 1;
                    // SAFETY: posted after `task` was written; the poster waits for `finished`
                    // before the closure goes out of scope.
                    if let Some(task) = unsafe { *s.task.get() } {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                            (*task)()
                        }));
                        if r.is_err() {
                            s.panicked.store(true, Ordering::Release);
                        }
                    }
                    s.finished.store(seen, Ordering::Release);
                }
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Runs `here` on this thread and `there` on the helper, and returns when both are done
    /// (also if `here` panics). Panics if `there` panicked.
    pub fn join(&self, here: impl FnOnce(), there: &(dyn Fn() + Sync)) {
        // SAFETY: the lifetime is erased only for the duration of this call: `Wait` below
        // blocks until the helper has finished with it, even when `here` unwinds.
        let task: Task = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Task>(there) };
        unsafe { *self.shared.task.get() = Some(task) };
        let n = self.shared.posted.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        struct Wait<'a>(&'a Shared, u64);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                let mut spins = 0u32;
                while self.0.finished.load(Ordering::Acquire) < self.1 {
                    // On a loaded machine the helper may not be running: stop burning the
                    // core it needs after a short spin.
                    spins = spins.saturating_add(1);
                    if spins < 2_000 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        {
            let _wait = Wait(&self.shared, n);
            here();
        }
        if self.shared.panicked.swap(false, Ordering::AcqRel) {
            panic!("the engine's helper thread panicked");
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A row-major `[m, n]` f32 matrix two threads fill in disjoint column ranges.
#[derive(Debug, Clone, Copy)]
pub struct OutMatrix {
    ptr: *mut f32,
    m: usize,
    n: usize,
}

// SAFETY: users write disjoint elements (column ranges) from each thread.
unsafe impl Send for OutMatrix {}
unsafe impl Sync for OutMatrix {}

impl OutMatrix {
    pub fn new(c: &mut [f32], m: usize, n: usize) -> Self {
        assert!(c.len() >= m * n, "output matrix size");
        Self {
            ptr: c.as_mut_ptr(),
            m,
            n,
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns `col0..col0 + cols` of row `r`.
    ///
    /// # Safety
    /// No other reference to these elements may be live, and the matrix the view came from
    /// must outlive the returned slice.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn segment(&self, r: usize, col0: usize, cols: usize) -> &mut [f32] {
        assert!(r < self.m && col0 + cols <= self.n, "segment out of range");
        std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + col0), cols)
    }
}

/// A raw `&mut [T]` handed to the other thread for a region only it touches.
#[derive(Debug, Clone, Copy)]
pub struct RawSlice<T> {
    ptr: *mut T,
    len: usize,
}

unsafe impl<T: Send> Send for RawSlice<T> {}
unsafe impl<T: Send> Sync for RawSlice<T> {}

impl<T> RawSlice<T> {
    pub fn new(s: &mut [T]) -> Self {
        Self {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// As [`OutMatrix::segment`]: exclusive use, and the source outlives the slice.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.ptr, self.len)
    }
}

/// Where to split `n` output columns between two threads: a multiple of 32 (the widest
/// micro-tile) near the middle, or 0 when `n` is too narrow to split.
pub fn split_columns(n: usize) -> usize {
    (n / 2) / 32 * 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn both_halves_run_every_time_and_the_helper_stops() {
        let h = Helper::new().unwrap();
        let count = AtomicUsize::new(0);
        for _ in 0..1000 {
            h.join(
                || {
                    count.fetch_add(1, Ordering::Relaxed);
                },
                &|| {
                    count.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
        assert_eq!(count.load(Ordering::Relaxed), 2000);
        // After parking, a job still wakes it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        h.join(|| {}, &|| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2001);
        drop(h);
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller() {
        let h = Helper::new().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            h.join(|| {}, &|| panic!("boom"));
        }));
        assert!(r.is_err());
        // Still usable.
        let ran = AtomicBool::new(false);
        h.join(|| {}, &|| ran.store(true, Ordering::Relaxed));
        assert!(ran.load(Ordering::Relaxed));
    }
}
