//! Linear probe: standardised features, multinomial logistic regression with L2, full-batch
//! Adam. Small enough to run in seconds on a CPU for a few thousand clips.

use crate::model::head::{Activation, Head};
use crate::model::pooling::Pooling;

#[derive(Debug, Clone)]
pub struct Probe {
    pub dim: usize,
    pub classes: usize,
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    /// `[classes][dim]`
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    pub epochs: usize,
    pub lr: f32,
    pub l2: f32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 300,
            lr: 0.01,
            l2: 1e-3,
        }
    }
}

fn softmax_row(z: &mut [f32]) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in z.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in z.iter_mut() {
        *v /= s;
    }
}

/// Per-feature mean and 1/std of the rows of `x`, and the rows standardised with them.
fn standardize(x: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = (x.len() / dim.max(1)).max(1);
    let mut mean = vec![0f32; dim];
    let mut var = vec![0f32; dim];
    for r in x.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n as f32;
        }
    }
    for r in x.chunks_exact(dim) {
        for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
            *s += (v - m) * (v - m) / n as f32;
        }
    }
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v.sqrt() + 1e-6)).collect();
    let xs: Vec<f32> = x
        .chunks_exact(dim)
        .flat_map(|r| {
            r.iter()
                .zip(&mean)
                .zip(&inv_std)
                .map(|((v, m), s)| (v - m) * s)
        })
        .collect();
    (mean, inv_std, xs)
}

/// The logit scale of a prototype head: a window at cosine 1 from a prototype scores this much
/// (cosine classifiers use 10-30; with 10 classes, 10 leaves room for doubt between neighbours).
const PROTOTYPE_SCALE: f32 = 10.0;

impl Probe {
    /// Nearest class prototype on cosine similarity (SimpleShot, Wang et al. 2019: centre,
    /// L2-normalise, average per class): no fitting, so no regularisation to choose, and on a
    /// handful of clips per class it can beat a logistic regression. Features are centred and
    /// scaled as [`Probe::fit`] does; the logits are `PROTOTYPE_SCALE x cos(x, prototype)` for a
    /// window of typical norm, so it is a linear head like the others (argmax is exactly the
    /// nearest prototype, whatever the window's norm).
    pub fn prototypes(x: &[f32], y: &[usize], dim: usize, classes: usize) -> Self {
        let (mean, inv_std, xs) = standardize(x, dim);
        let mut proto = vec![0f32; classes * dim];
        let mut norm_sum = 0f64;
        for (r, &label) in xs.chunks_exact(dim).zip(y) {
            let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            norm_sum += norm as f64;
            for (p, v) in proto[label * dim..(label + 1) * dim].iter_mut().zip(r) {
                *p += v / norm;
            }
        }
        let typical = (norm_sum / y.len().max(1) as f64) as f32;
        for c in proto.chunks_exact_mut(dim) {
            let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                let k = PROTOTYPE_SCALE / (norm * typical.max(1e-12));
                c.iter_mut().for_each(|v| *v *= k);
            }
        }
        Self {
            dim,
            classes,
            mean,
            inv_std,
            weight: proto,
            bias: vec![0.0; classes],
        }
    }

    /// Fits on `x` (`n x dim`, row-major) with labels `y` in `0..classes`.
    pub fn fit(x: &[f32], y: &[usize], dim: usize, classes: usize, cfg: ProbeConfig) -> Self {
        let n = y.len();
        let (mean, inv_std, xs) = standardize(x, dim);
        let mut w = vec![0f32; classes * dim];
        let mut b = vec![0f32; classes];
        let (mut mw, mut vw) = (vec![0f32; w.len()], vec![0f32; w.len()]);
        let (mut mb, mut vb) = (vec![0f32; classes], vec![0f32; classes]);
        let mut z = vec![0f32; classes];
        for t in 1..=cfg.epochs {
            let mut gw = vec![0f32; w.len()];
            let mut gb = vec![0f32; classes];
            for (r, &label) in xs.chunks_exact(dim).zip(y) {
                for c in 0..classes {
                    z[c] = b[c]
                        + w[c * dim..(c + 1) * dim]
                            .iter()
                            .zip(r)
                            .map(|(a, b)| a * b)
                            .sum::<f32>();
                }
                softmax_row(&mut z);
                z[label] -= 1.0;
                for c in 0..classes {
                    let g = z[c] / n as f32;
                    gb[c] += g;
                    for (gw, v) in gw[c * dim..(c + 1) * dim].iter_mut().zip(r) {
                        *gw += g * v;
                    }
                }
            }
            for (g, wv) in gw.iter_mut().zip(&w) {
                *g += cfg.l2 * wv;
            }
            let (b1, b2) = (0.9f32, 0.999f32);
            let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
            for i in 0..w.len() {
                mw[i] = b1 * mw[i] + (1.0 - b1) * gw[i];
                vw[i] = b2 * vw[i] + (1.0 - b2) * gw[i] * gw[i];
                w[i] -= cfg.lr * (mw[i] / c1) / ((vw[i] / c2).sqrt() + 1e-8);
            }
            for i in 0..classes {
                mb[i] = b1 * mb[i] + (1.0 - b1) * gb[i];
                vb[i] = b2 * vb[i] + (1.0 - b2) * gb[i] * gb[i];
                b[i] -= cfg.lr * (mb[i] / c1) / ((vb[i] / c2).sqrt() + 1e-8);
            }
        }
        Self {
            dim,
            classes,
            mean,
            inv_std,
            weight: w,
            bias: b,
        }
    }

    /// Class probabilities of one feature vector.
    pub fn predict_proba(&self, x: &[f32]) -> Vec<f32> {
        let xs: Vec<f32> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.inv_std)
            .map(|((v, m), s)| (v - m) * s)
            .collect();
        let mut z: Vec<f32> = (0..self.classes)
            .map(|c| {
                self.bias[c]
                    + self.weight[c * self.dim..(c + 1) * self.dim]
                        .iter()
                        .zip(&xs)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
            })
            .collect();
        softmax_row(&mut z);
        z
    }

    pub fn predict(&self, x: &[f32]) -> usize {
        let p = self.predict_proba(x);
        (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or(0)
    }
}

/// L2 strengths tried when the probe's regularisation is chosen on a validation fold. The loss
/// is the mean cross-entropy plus `l2 / 2 |w|^2`, so `l2 = 1 / (C n)` for scikit-learn's `C`: with
/// about a thousand training clips this grid spans the reference probe's C from 0.003 to 10.
pub const L2_GRID: [f32; 7] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1];

/// A probe whose L2 is chosen on a validation fold (as the anchors' protocols do): fitted on the
/// training rows outside `val_fold` for each L2 of `grid`, scored on `val_fold`, then refitted on
/// every training row with the best (the stronger L2 on ties). Returns the probe, the chosen L2
/// and each L2's validation accuracy; without validation rows, the default L2 and no scores.
pub fn fit_validated(
    x: &[f32],
    y: &[usize],
    folds: &[Option<u32>],
    val_fold: u32,
    dim: usize,
    classes: usize,
    grid: &[f32],
) -> (Probe, f32, Vec<(f32, f64)>) {
    let rows: Vec<&[f32]> = x.chunks_exact(dim).collect();
    let (mut xt, mut yt, mut xv, mut yv) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((r, &label), f) in rows.iter().zip(y).zip(folds) {
        if *f == Some(val_fold) {
            xv.extend_from_slice(r);
            yv.push(label);
        } else {
            xt.extend_from_slice(r);
            yt.push(label);
        }
    }
    let base = ProbeConfig::default();
    if yv.is_empty() || yt.is_empty() || grid.is_empty() {
        return (Probe::fit(x, y, dim, classes, base), base.l2, Vec::new());
    }
    let mut scores = Vec::new();
    for &l2 in grid {
        let p = Probe::fit(&xt, &yt, dim, classes, ProbeConfig { l2, ..base });
        let hits = xv
            .chunks_exact(dim)
            .zip(&yv)
            .filter(|(r, &t)| p.predict(r) == t)
            .count();
        scores.push((l2, hits as f64 / yv.len() as f64));
    }
    let best = scores
        .iter()
        .copied()
        .fold(None::<(f32, f64)>, |acc, (l2, a)| match acc {
            Some((bl, ba)) if ba > a || (ba == a && bl > l2) => Some((bl, ba)),
            _ => Some((l2, a)),
        })
        .map_or(base.l2, |b| b.0);
    let probe = Probe::fit(x, y, dim, classes, ProbeConfig { l2: best, ..base });
    (probe, best, scores)
}

impl Probe {
    /// The probe as a tagging head on raw pooled embeddings: the standardisation folds into the
    /// weights (`w' = w / std`, `b' = b - w' . mean`), so the head costs one dot product per class.
    /// `pool` is how the embeddings it was fitted on were pooled.
    pub fn to_head(&self, labels: Vec<String>, pool: Pooling) -> Head {
        let mut weight = vec![0f32; self.classes * self.dim];
        let mut bias = self.bias.clone();
        for c in 0..self.classes {
            for d in 0..self.dim {
                let w = self.weight[c * self.dim + d] * self.inv_std[d];
                weight[c * self.dim + d] = w;
                bias[c] -= w * self.mean[d];
            }
        }
        Head {
            labels,
            weight,
            bias,
            dim: self.dim,
            trained: true,
            activation: Activation::Softmax,
            support: Vec::new(),
            support_labels: Vec::new(),
            window_columns: None,
            encoder: None,
            pool,
        }
    }
}

/// At most `per_class` rows of each class, evenly spaced through its rows (deterministic): the
/// support set a head keeps for later enrollment.
pub fn support_subset(
    x: &[f32],
    y: &[usize],
    dim: usize,
    per_class: usize,
) -> (Vec<f32>, Vec<u32>) {
    let classes = y.iter().max().map_or(0, |m| m + 1);
    let (mut sx, mut sy) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        let take = rows.len().min(per_class);
        for k in 0..take {
            let i = rows[k * rows.len() / take];
            sx.extend_from_slice(&x[i * dim..(i + 1) * dim]);
            sy.push(c as u32);
        }
    }
    (sx, sy)
}

/// Accuracy and macro-F1 of predictions, and the confusion matrix `[true][pred]`.
pub fn scores(truth: &[usize], pred: &[usize], classes: usize) -> (f64, f64, Vec<Vec<usize>>) {
    let mut cm = vec![vec![0usize; classes]; classes];
    for (&t, &p) in truth.iter().zip(pred) {
        cm[t][p] += 1;
    }
    let acc =
        truth.iter().zip(pred).filter(|(a, b)| a == b).count() as f64 / truth.len().max(1) as f64;
    let mut f1s = Vec::new();
    #[allow(clippy::needless_range_loop)] // c indexes rows and columns of the matrix
    for c in 0..classes {
        let tp = cm[c][c] as f64;
        let fp: f64 = (0..classes)
            .filter(|&r| r != c)
            .map(|r| cm[r][c] as f64)
            .sum();
        let fn_: f64 = (0..classes)
            .filter(|&p| p != c)
            .map(|p| cm[c][p] as f64)
            .sum();
        if tp + fp + fn_ > 0.0 {
            f1s.push(if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (2.0 * tp + fp + fn_)
            });
        }
    }
    (acc, f1s.iter().sum::<f64>() / f1s.len().max(1) as f64, cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform noise in [-0.5, 0.5) from a seeded LCG.
    fn uniform_noise(seed: u32) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    #[test]
    fn l2_is_chosen_on_the_validation_fold_and_refitted() {
        // Two classes separated along the first of 4 features; folds 1-3, validation on 3.
        let mut noise = uniform_noise(7);
        let (mut x, mut y, mut folds) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..90 {
            let c = i % 2;
            x.extend([c as f32 * 2.0 - 1.0 + noise(), noise(), noise(), noise()]);
            y.push(c);
            folds.push(Some(1 + (i / 30) as u32));
        }
        let grid = [1e-3, 1e-1];
        let (p, l2, scores) = fit_validated(&x, &y, &folds, 3, 4, 2, &grid);
        assert_eq!(scores.len(), 2);
        assert!(grid.contains(&l2));
        // Separable: both reach 100 % on validation, and the tie goes to the stronger L2.
        assert!(scores.iter().all(|s| s.1 == 1.0), "{scores:?}");
        assert_eq!(l2, 1e-1);
        let hits = x
            .chunks(4)
            .zip(&y)
            .filter(|(r, &t)| p.predict(r) == t)
            .count();
        assert_eq!(hits, 90);
        // No validation rows: the default L2, nothing scored.
        let (_, l2, scores) = fit_validated(&x, &y, &folds, 9, 4, 2, &grid);
        assert_eq!((l2, scores.len()), (ProbeConfig::default().l2, 0));
    }

    #[test]
    fn separable_classes_are_learned() {
        // Three Gaussian blobs in 4-D.
        let mut r = uniform_noise(7);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..150 {
            let c = i % 3;
            for d in 0..4 {
                x.push(if d == c { 2.0 } else { 0.0 } + r());
            }
            y.push(c);
        }
        let p = Probe::fit(&x, &y, 4, 3, ProbeConfig::default());
        let pred: Vec<usize> = x.chunks(4).map(|v| p.predict(v)).collect();
        let (acc, f1, _) = scores(&y, &pred, 3);
        assert!(acc > 0.95 && f1 > 0.95, "{acc} {f1}");

        // The folded head gives the probe's probabilities on raw features.
        let head = p.to_head(vec!["a".into(), "b".into(), "c".into()], Pooling::Mean);
        let mut out = Vec::new();
        for v in x.chunks(4).take(10) {
            head.scores_into(v, &mut out);
            for (a, b) in out.iter().zip(p.predict_proba(v)) {
                assert!((a - b).abs() < 1e-5, "{a} {b}");
            }
        }
        // The prototype head separates the blobs too, with no fitting.
        let pr = Probe::prototypes(&x, &y, 4, 3);
        let pred: Vec<usize> = x.chunks(4).map(|v| pr.predict(v)).collect();
        assert!(scores(&y, &pred, 3).0 > 0.95);
        let (sx, sy) = support_subset(&x, &y, 4, 7);
        assert_eq!(sy.len(), 21);
        assert_eq!(sx.len(), 84);
        assert!(sy.iter().filter(|&&c| c == 2).count() == 7);
    }
}

#[cfg(test)]
mod prototype_tests {
    use super::*;

    #[test]
    fn prototypes_are_the_nearest_class_mean_on_cosine() {
        // Standardised, the two classes' rows are (+1, +-1) and (-1, +-1) times a norm; the
        // prototypes point along +x and -x, so a row's class is the sign of its first feature.
        let x = [2.0, 1.0, 2.0, -1.0, -2.0, 1.0, -2.0, -1.0];
        let y = [0, 0, 1, 1];
        let p = Probe::prototypes(&x, &y, 2, 2);
        assert_eq!(p.predict(&[3.0, 0.0]), 0);
        assert_eq!(p.predict(&[-0.5, 5.0]), 1);
        // A row on a prototype scores the scale's cosine: exp(10) / (exp(10) + exp(-10)).
        let pr = p.predict_proba(&[2.0 * 2f32.sqrt(), 0.0]);
        assert!(
            (pr[0] - 1.0 / (1.0 + (-20f32).exp())).abs() < 1e-6,
            "{pr:?}"
        );
    }
}
