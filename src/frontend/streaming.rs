//! Streaming log-mel: push chunks of any size, get each frame as soon as its last sample arrives.

use super::fbank::FbankKernel;
use crate::config::{ConfigError, FrontendConfig};

/// How many hops the sample buffer holds beyond one frame. Frames are computed in place from the
/// buffer, and the unconsumed tail (less than one frame) is moved to the front once per refill,
/// so the copying cost is amortised over up to this many frames.
const SPARE_HOPS: usize = 32;

/// Streaming counterpart of [`super::LogMelExtractor`].
///
/// Frame `t` of the stream covers stream samples `[t hop, t hop + frame_len)`, exactly as offline,
/// and is computed by the same kernel on the same values, so the two agree bit for bit whatever
/// the chunking. All buffers are allocated in [`new`](Self::new); [`push`](Self::push) never
/// touches the heap.
#[derive(Debug)]
pub struct StreamingFbank {
    kernel: FbankKernel,
    hop: usize,
    frame_len: usize,
    buf: Vec<f32>,
    /// Valid samples in `buf`.
    filled: usize,
    /// Start of the next frame in `buf`.
    next: usize,
    out: Vec<f32>,
    frames_emitted: u64,
}

impl StreamingFbank {
    pub fn new(cfg: &FrontendConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let frame_len = cfg.frame_length();
        let hop = cfg.hop_length();
        Ok(Self {
            kernel: FbankKernel::new(cfg),
            hop,
            frame_len,
            buf: vec![0.0; frame_len + SPARE_HOPS * hop],
            filled: 0,
            next: 0,
            out: vec![0.0; cfg.n_mels],
            frames_emitted: 0,
        })
    }

    /// Feeds samples; calls `on_frame(index, log_mel)` for every frame completed by them, in order.
    pub fn push(&mut self, mut samples: &[f32], mut on_frame: impl FnMut(u64, &[f32])) {
        while !samples.is_empty() {
            let take = (self.buf.len() - self.filled).min(samples.len());
            self.buf[self.filled..self.filled + take].copy_from_slice(&samples[..take]);
            self.filled += take;
            samples = &samples[take..];
            while self.next + self.frame_len <= self.filled {
                self.kernel.compute(
                    &self.buf[self.next..self.next + self.frame_len],
                    &mut self.out,
                );
                on_frame(self.frames_emitted, &self.out);
                self.frames_emitted += 1;
                self.next += self.hop;
            }
            // Keep only what a future frame still needs. validate() guarantees hop <= frame_len,
            // so `next <= filled` here.
            let keep_from = self.next;
            self.buf.copy_within(keep_from..self.filled, 0);
            self.filled -= keep_from;
            self.next -= keep_from;
        }
    }

    /// Frames produced since construction or the last [`reset`](Self::reset).
    pub fn frames_emitted(&self) -> u64 {
        self.frames_emitted
    }

    /// Samples buffered but not yet part of an emitted frame's hop.
    pub fn pending_samples(&self) -> usize {
        self.filled - self.next
    }

    /// Forgets buffered samples and restarts frame numbering (e.g. after a capture gap).
    pub fn reset(&mut self) {
        self.filled = 0;
        self.next = 0;
        self.frames_emitted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::LogMelExtractor;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn sample_by_sample_equals_offline() {
        let cfg = FrontendConfig::default();
        let x = noise(4_321, 7);
        let offline = LogMelExtractor::new(&cfg).unwrap().compute(&x);
        let mut s = StreamingFbank::new(&cfg).unwrap();
        let mut got = Vec::new();
        for v in &x {
            s.push(std::slice::from_ref(v), |_, f| got.extend_from_slice(f));
        }
        assert_eq!(got, offline.data);
        assert_eq!(s.frames_emitted(), offline.n_frames as u64);
        // Samples after the last frame's start + hop wait for the next frame.
        assert_eq!(
            s.pending_samples(),
            x.len() - offline.n_frames * cfg.hop_length()
        );
    }

    #[test]
    fn hop_equal_to_frame_works() {
        let cfg = FrontendConfig {
            frame_shift_ms: 25.0,
            ..FrontendConfig::default()
        };
        let x = noise(10_000, 3);
        let offline = LogMelExtractor::new(&cfg).unwrap().compute(&x);
        let mut s = StreamingFbank::new(&cfg).unwrap();
        let mut got = Vec::new();
        for c in x.chunks(999) {
            s.push(c, |_, f| got.extend_from_slice(f));
        }
        assert_eq!(got, offline.data);
    }
}
