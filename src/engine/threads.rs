//! The engine's threads, without allocating per call: a [`Pool`] of persistent helpers, each
//! running one part of a split operation ([`Pool::run`], like a scoped `rayon` for a fixed
//! number of parts), and raw output views so the parts can fill disjoint columns of one matrix.
//!
//! A helper spins for a millisecond after each job (the next one follows within microseconds
//! inside a forward pass) and then parks, so an idle stream between hops costs no CPU. Waking a
//! parked thread can take milliseconds (about 10 ms measured on this repository's 2-vCPU
//! virtual machine), and spinning longer to avoid it steals the core the audio and UI threads
//! need (measured: hops stretched to 4-12 ms, the scheduler's slices), so the live pipeline
//! measures one thread against all of them and keeps the faster (`stream::worker`).
//!
//! Results do not depend on the number of threads: every split divides *output* columns, heads
//! or rows, never a sum, so each value is computed by the same instructions in the same order
//! whichever thread computes it (tested bit for bit in `engine::encoder`).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How long a helper spins after a job before parking.
const SPIN: std::time::Duration = std::time::Duration::from_millis(1);
/// How long an idle helper parks between checks (a job wakes it at once with `unpark`).
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// The most threads a pool takes (the profile's and `--threads`' bound as well).
pub const MAX_THREADS: usize = 256;

type Task = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// The job and the part of it this helper runs.
    task: UnsafeCell<Option<(Task, usize)>>,
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
struct Helper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Helper {
    fn new(index: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            task: UnsafeCell::new(None),
            posted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ajepa-engine-{index}"))
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
                            // With more threads than free cores, a spinning helper holds the
                            // core another part needs: hand it over (on an idle core this
                            // returns at once). Without it, 3 threads on 2 cores took 38 ms
                            // per window instead of 2.
                            std::thread::yield_now();
                        } else {
                            std::thread::park_timeout(IDLE_POLL);
                        }
                    }
                    seen += 1;
                    // SAFETY: posted after `task` was written; the poster waits for `finished`
                    // before the closure goes out of scope.
                    if let Some((task, part)) = unsafe { *s.task.get() } {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                            (*task)(part)
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

    /// Hands `part` of `task` to the helper; returns the ticket [`Helper::wait`] waits for.
    ///
    /// # Safety
    /// `task` must stay alive until `wait(ticket)` has returned.
    unsafe fn post(&self, task: Task, part: usize) -> u64 {
        unsafe { *self.shared.task.get() = Some((task, part)) };
        let n = self.shared.posted.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        n
    }

    fn wait(&self, ticket: u64) {
        let mut spins = 0u32;
        while self.shared.finished.load(Ordering::Acquire) < ticket {
            // On a loaded machine the helper may not be running: stop burning the core it
            // needs after a short spin.
            spins = spins.saturating_add(1);
            if spins < 2_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
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

/// The calling thread plus `threads - 1` persistent helpers.
pub struct Pool {
    helpers: Vec<Helper>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool of `threads` threads in all (1 to [`MAX_THREADS`]; 1 starts no helper).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.clamp(1, MAX_THREADS);
        Ok(Self {
            helpers: (1..threads).map(Helper::new).collect::<Result<_, _>>()?,
        })
    }

    /// Threads in all, the caller's included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(0)` on this thread and `f(1)` .. `f(parts - 1)` on the helpers, and returns when
    /// every part is done (also when `f(0)` panics). `parts` is at most [`Pool::threads`].
    /// Panics if a helper's part panicked. Allocates nothing.
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(
            parts <= self.threads(),
            "{parts} parts on {} threads",
            self.threads()
        );
        if parts <= 1 {
            if parts == 1 {
                f(0);
            }
            return;
        }
        // SAFETY: the lifetime is erased only for the duration of this call: `Wait` below
        // blocks until every helper has finished with it, even when `f(0)` unwinds.
        let task: Task = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Task>(f) };
        /// Waits, on drop, for every helper that was given a part: each has at most one job
        /// outstanding, so it is done when its `finished` count reaches its `posted` count.
        struct Wait<'a>(&'a [Helper]);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                for h in self.0 {
                    h.wait(h.shared.posted.load(Ordering::Acquire));
                }
            }
        }
        let helpers = &self.helpers[..parts - 1];
        let mut wait = Wait(&helpers[..0]);
        for (i, h) in helpers.iter().enumerate() {
            // SAFETY: `wait` covers this helper from here on and outlives `f` (it is dropped
            // below, or while unwinding).
            unsafe { h.post(task, i + 1) };
            wait.0 = &helpers[..i + 1];
        }
        f(0);
        drop(wait);
        let mut panicked = false;
        for h in helpers {
            panicked |= h.shared.panicked.swap(false, Ordering::AcqRel);
        }
        if panicked {
            panic!("an engine helper thread panicked");
        }
    }
}

/// A row-major `[m, n]` f32 matrix threads fill in disjoint column ranges.
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

    /// `len` elements from `start`: one thread's own part.
    ///
    /// # Safety
    /// As [`RawSlice::get`], for that range.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_range(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.len, "range out of the slice");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }

    /// Element `i`: one thread's own.
    ///
    /// # Safety
    /// As [`RawSlice::get`], for that element.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn element(&self, i: usize) -> &mut T {
        assert!(i < self.len, "element out of the slice");
        &mut *self.ptr.add(i)
    }
}

/// How many parts `n` output columns split into on `threads` threads: one per 32 columns (the
/// widest micro-tile) at most.
pub fn column_parts(n: usize, threads: usize) -> usize {
    threads.min(n.div_ceil(32)).max(1)
}

/// Part `i` of `parts` of `n` output columns: boundaries on multiples of 32, as even as that
/// allows, the last part ending at `n`.
pub fn column_part(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let tiles = n.div_ceil(32);
    let edge = |k: usize| (tiles * k / parts * 32).min(n);
    edge(i)..edge(i + 1)
}

/// Part `i` of `parts` of `n` rows (or heads), as even as possible.
pub fn row_part(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    n * i / parts..n * (i + 1) / parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_part_runs_every_time_and_the_helpers_stop() {
        for threads in 1..=4 {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            let counts: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            for round in 0..1000 {
                let parts = 1 + round % threads;
                pool.run(parts, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            // Part i runs in the rounds with more than i parts.
            for (i, c) in counts.iter().enumerate() {
                let expect = (0..1000).filter(|r| 1 + r % threads > i).count();
                assert_eq!(
                    c.load(Ordering::Relaxed),
                    expect,
                    "{threads} threads, part {i}"
                );
            }
            // After parking, a job still wakes them.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let ran = AtomicUsize::new(0);
            pool.run(threads, &|_| {
                ran.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(ran.load(Ordering::Relaxed), threads);
            drop(pool);
        }
    }

    #[test]
    fn a_panic_on_a_helper_reaches_the_caller_and_the_pool_stays_usable() {
        let pool = Pool::new(3).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(3, &|i| {
                if i == 2 {
                    panic!("boom")
                }
            });
        }));
        assert!(r.is_err());
        // A panic on the calling thread still waits for the helpers' parts.
        let done = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(3, &|i| {
                if i == 0 {
                    panic!("here")
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
                done.fetch_add(1, Ordering::Relaxed);
            });
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 2);
        let ran = AtomicBool::new(false);
        pool.run(3, &|i| {
            if i == 1 {
                ran.store(true, Ordering::Relaxed)
            }
        });
        assert!(ran.load(Ordering::Relaxed));
    }

    #[test]
    fn parts_cover_their_range_once_on_tile_boundaries() {
        for n in [1, 31, 32, 33, 64, 96, 192, 576, 768, 1000] {
            for threads in 1..=8 {
                let parts = column_parts(n, threads);
                assert!(parts >= 1 && parts <= threads && parts <= n.div_ceil(32));
                let mut next = 0;
                for i in 0..parts {
                    let r = column_part(n, parts, i);
                    assert_eq!(r.start, next, "n {n}, {parts} parts");
                    assert!(
                        r.start.is_multiple_of(32) && !r.is_empty(),
                        "n {n}, part {i}: {r:?}"
                    );
                    next = r.end;
                }
                assert_eq!(next, n);
                let rows: usize = (0..threads).map(|i| row_part(n, threads, i).len()).sum();
                assert_eq!(rows, n);
            }
        }
        // Two parts split where the two-thread engine always did (a multiple of 32 near half).
        assert_eq!(column_part(576, 2, 0), 0..288);
        assert_eq!(column_part(192, 2, 1), 96..192);
    }
}
