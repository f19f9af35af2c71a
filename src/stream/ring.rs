//! The lock-free single-producer, single-consumer sample ring between the audio callback and
//! the worker (ringbuf's `HeapRb`). Its capacity is fixed when it is made, so memory is bounded;
//! when the worker falls so far behind that the ring is full, the newest samples are dropped
//! and counted (an overrun), and the callback never waits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Counters shared by both ends; read by the UI.
#[derive(Debug, Default)]
pub struct RingCounters {
    /// Samples the callback delivered.
    pub pushed: AtomicU64,
    /// Samples dropped because the ring was full.
    pub dropped: AtomicU64,
}

/// The callback's end. `push` is wait-free and allocates nothing.
pub struct SampleProducer {
    prod: HeapProd<f32>,
    counters: Arc<RingCounters>,
}

impl SampleProducer {
    /// Pushes what fits and counts the rest as dropped.
    #[inline]
    pub fn push(&mut self, samples: &[f32]) {
        let n = self.prod.push_slice(samples);
        self.counters.pushed.fetch_add(n as u64, Ordering::Relaxed);
        if n < samples.len() {
            self.counters
                .dropped
                .fetch_add((samples.len() - n) as u64, Ordering::Relaxed);
        }
    }
}

/// The worker's end.
pub struct SampleConsumer {
    cons: HeapCons<f32>,
}

impl SampleConsumer {
    /// Pops up to `out.len()` samples; returns how many.
    pub fn pop(&mut self, out: &mut [f32]) -> usize {
        self.cons.pop_slice(out)
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.cons.occupied_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A ring of `capacity` samples.
pub fn sample_ring(capacity: usize) -> (SampleProducer, SampleConsumer, Arc<RingCounters>) {
    let (prod, cons) = HeapRb::<f32>::new(capacity.max(1)).split();
    let counters = Arc::new(RingCounters::default());
    (
        SampleProducer {
            prod,
            counters: counters.clone(),
        },
        SampleConsumer { cons },
        counters,
    )
}

/// Downmixes interleaved frames of `channels` channels to mono by the mean, converting each
/// sample with `to_f32`, into `scratch` in pieces, and pushes them: no allocation, bounded
/// work, suitable for a real-time callback.
#[inline]
pub fn push_interleaved<T: Copy>(
    producer: &mut SampleProducer,
    data: &[T],
    channels: usize,
    to_f32: impl Fn(T) -> f32,
    scratch: &mut [f32],
) {
    let channels = channels.max(1);
    let scale = 1.0 / channels as f32;
    let per_chunk = scratch.len().max(1);
    for frames in data.chunks(per_chunk * channels) {
        let mut n = 0;
        for frame in frames.chunks_exact(channels) {
            let mut acc = 0.0;
            for &s in frame {
                acc += to_f32(s);
            }
            scratch[n] = acc * scale;
            n += 1;
        }
        producer.push(&scratch[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overruns_are_counted_not_blocking() {
        let (mut p, mut c, counters) = sample_ring(8);
        p.push(&[1.0; 5]);
        p.push(&[2.0; 5]);
        assert_eq!(counters.pushed.load(Ordering::Relaxed), 8);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2);
        let mut out = [0.0; 16];
        assert_eq!(c.pop(&mut out), 8);
        assert_eq!(&out[..8], &[1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    }

    #[test]
    fn interleaved_stereo_is_averaged() {
        let (mut p, mut c, _) = sample_ring(64);
        let data: Vec<i16> = vec![16384, 0, -16384, -16384, 32767, 32767];
        let mut scratch = [0.0f32; 2];
        push_interleaved(&mut p, &data, 2, |s: i16| s as f32 / 32768.0, &mut scratch);
        let mut out = [0.0; 8];
        let n = c.pop(&mut out);
        assert_eq!(n, 3);
        assert_eq!(out[0], 0.25);
        assert_eq!(out[1], -0.5);
        assert!((out[2] - 32767.0 / 32768.0).abs() < 1e-7);
    }
}
