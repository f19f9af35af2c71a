//! Learning-rate, weight-decay and EMA-momentum schedules (I-JEPA's src/utils/schedulers.py and
//! the momentum scheduler of src/train.py).

use std::f64::consts::PI;

/// Linear warm-up from `start_lr` to `ref_lr` over the first `warmup_frac` of the run, then
/// cosine decay to `final_lr` at its end (I-JEPA's `WarmupCosineSchedule`), at `progress` in
/// `[0, 1]` (by steps or by wall-clock time).
pub fn learning_rate(
    progress: f64,
    warmup_frac: f64,
    start_lr: f64,
    ref_lr: f64,
    final_lr: f64,
) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    if p < warmup_frac {
        return start_lr + (ref_lr - start_lr) * p / warmup_frac;
    }
    let q = ((p - warmup_frac) / (1.0 - warmup_frac).max(1e-12)).min(1.0);
    final_lr + (ref_lr - final_lr) * 0.5 * (1.0 + (PI * q).cos())
}

/// Cosine from `start` to `end` over the run (I-JEPA's `CosineWDSchedule`).
pub fn weight_decay(progress: f64, start: f64, end: f64) -> f64 {
    let p = progress.clamp(0.0, 1.0);
    end + (start - end) * 0.5 * (1.0 + (PI * p).cos())
}

/// Linear from `start` to `end` over the run (I-JEPA: 0.996 -> 1.0).
pub fn ema_momentum(progress: f64, start: f64, end: f64) -> f64 {
    start + (end - start) * progress.clamp(0.0, 1.0)
}

/// The three schedules at `progress` in `[0, 1]` of a run: (learning rate, weight decay, EMA
/// momentum).
pub fn at_progress(
    progress: f64,
    warmup_frac: f64,
    (start_lr, ref_lr, final_lr): (f64, f64, f64),
    wd: (f64, f64),
    ema: (f64, f64),
) -> (f64, f64, f64) {
    (
        learning_rate(progress, warmup_frac, start_lr, ref_lr, final_lr),
        weight_decay(progress, wd.0, wd.1),
        ema_momentum(progress, ema.0, ema.1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        // Step s of a 110-step run with 10 warm-up steps is progress s / 110.
        let (w, at) = (10.0 / 110.0, |s: f64| s / 110.0);
        assert_eq!(learning_rate(at(0.0), w, 1e-5, 1e-3, 1e-6), 1e-5);
        assert!((learning_rate(at(5.0), w, 0.0, 1e-3, 0.0) - 5e-4).abs() < 1e-15);
        assert_eq!(learning_rate(at(10.0), w, 0.0, 1e-3, 1e-6), 1e-3);
        assert!((learning_rate(at(60.0), w, 0.0, 1e-3, 0.0) - 5e-4).abs() < 1e-12);
        assert!((learning_rate(at(110.0), w, 0.0, 1e-3, 1e-6) - 1e-6).abs() < 1e-15);
        assert!((weight_decay(0.0, 0.04, 0.4) - 0.04).abs() < 1e-15);
        assert!((weight_decay(0.5, 0.04, 0.4) - 0.22).abs() < 1e-12);
        assert!((weight_decay(1.0, 0.04, 0.4) - 0.4).abs() < 1e-12);
        assert_eq!(ema_momentum(0.0, 0.996, 1.0), 0.996);
        assert!((ema_momentum(0.5, 0.996, 1.0) - 0.998).abs() < 1e-12);
        assert_eq!(ema_momentum(1.0, 0.996, 1.0), 1.0);

        // All three at once.
        let (lr, wd, m) = at_progress(0.5, 0.0, (0.0, 1e-3, 0.0), (0.04, 0.4), (0.996, 1.0));
        assert!((lr - 5e-4).abs() < 1e-12, "{lr}");
        assert!((wd - 0.22).abs() < 1e-12 && (m - 0.998).abs() < 1e-12);
        assert!(
            (at_progress(0.05, 0.1, (0.0, 1e-3, 0.0), (0.05, 0.05), (0.996, 1.0)).0 - 5e-4).abs()
                < 1e-15
        );
        let end = at_progress(1.0, 0.06, (0.0, 5e-4, 1e-6), (0.05, 0.05), (0.996, 1.0));
        assert!((end.0 - 1e-6).abs() < 1e-15 && end.2 == 1.0);
        assert_eq!(
            at_progress(7.0, 0.06, (0.0, 5e-4, 1e-6), (0.05, 0.05), (0.996, 1.0)),
            end
        );
    }
}
