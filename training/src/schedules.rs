//! Learning-rate, weight-decay and EMA-momentum schedules (I-JEPA's src/utils/schedulers.py and
//! the momentum scheduler of src/train.py).

use std::f64::consts::PI;

/// Linear warm-up from `start_lr` to `ref_lr` over `warmup` steps, then cosine decay to
/// `final_lr` at `total` (I-JEPA's `WarmupCosineSchedule`).
pub fn learning_rate(
    step: u64,
    warmup: u64,
    total: u64,
    start_lr: f64,
    ref_lr: f64,
    final_lr: f64,
) -> f64 {
    if step < warmup {
        return start_lr + (ref_lr - start_lr) * step as f64 / warmup.max(1) as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / span as f64).min(1.0);
    final_lr + (ref_lr - final_lr) * 0.5 * (1.0 + (PI * progress).cos())
}

/// Cosine from `start` to `end` over `total` steps (I-JEPA's `CosineWDSchedule`).
pub fn weight_decay(step: u64, total: u64, start: f64, end: f64) -> f64 {
    let progress = (step as f64 / total.max(1) as f64).min(1.0);
    end + (start - end) * 0.5 * (1.0 + (PI * progress).cos())
}

/// Linear from `start` to `end` over `total` steps (I-JEPA: 0.996 -> 1.0).
pub fn ema_momentum(step: u64, total: u64, start: f64, end: f64) -> f64 {
    let progress = (step as f64 / total.max(1) as f64).min(1.0);
    start + (end - start) * progress
}

/// The three schedules at `progress` in `[0, 1]` of a run (by steps or by wall-clock time):
/// learning rate (linear warm-up over the first `warmup_frac`, then cosine to `final_lr`),
/// weight decay (cosine from `wd.0` to `wd.1`) and EMA momentum (linear from `ema.0` to `ema.1`).
pub fn at_progress(
    progress: f64,
    warmup_frac: f64,
    (start_lr, ref_lr, final_lr): (f64, f64, f64),
    wd: (f64, f64),
    ema: (f64, f64),
) -> (f64, f64, f64) {
    let p = progress.clamp(0.0, 1.0);
    let lr = if p < warmup_frac {
        start_lr + (ref_lr - start_lr) * p / warmup_frac
    } else {
        let q = ((p - warmup_frac) / (1.0 - warmup_frac).max(1e-12)).min(1.0);
        final_lr + (ref_lr - final_lr) * 0.5 * (1.0 + (PI * q).cos())
    };
    let wd = wd.1 + (wd.0 - wd.1) * 0.5 * (1.0 + (PI * p).cos());
    (lr, wd, ema.0 + (ema.1 - ema.0) * p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        assert_eq!(learning_rate(0, 10, 110, 1e-5, 1e-3, 1e-6), 1e-5);
        assert!((learning_rate(5, 10, 110, 0.0, 1e-3, 0.0) - 5e-4).abs() < 1e-15);
        assert_eq!(learning_rate(10, 10, 110, 0.0, 1e-3, 1e-6), 1e-3);
        assert!((learning_rate(60, 10, 110, 0.0, 1e-3, 0.0) - 5e-4).abs() < 1e-12);
        assert!((learning_rate(110, 10, 110, 0.0, 1e-3, 1e-6) - 1e-6).abs() < 1e-15);
        assert!((weight_decay(0, 100, 0.04, 0.4) - 0.04).abs() < 1e-15);
        assert!((weight_decay(50, 100, 0.04, 0.4) - 0.22).abs() < 1e-12);
        assert!((weight_decay(100, 100, 0.04, 0.4) - 0.4).abs() < 1e-12);
        assert_eq!(ema_momentum(0, 100, 0.996, 1.0), 0.996);
        assert!((ema_momentum(50, 100, 0.996, 1.0) - 0.998).abs() < 1e-12);
        assert_eq!(ema_momentum(100, 100, 0.996, 1.0), 1.0);

        // By progress: the same curves as by steps where the two agree.
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
