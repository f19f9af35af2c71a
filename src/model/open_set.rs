//! "None of my classes" as an answer: an open-set check on top of a head's decision.
//!
//! A linear head always picks one of its classes; a sound unlike all of them (speech, a phone
//! tone before a dog-only head) still gets one, often with a high score. The check here asks
//! instead whether the embedding lies where the chosen class's examples lie: the head's support
//! set (the training embeddings it keeps, up to 48 per class) is standardised per dimension,
//! each class gets a prototype (the normalised mean of its normalised rows, as in prototypical
//! networks, Snell et al. 2017), and each class a threshold on the cosine similarity to its
//! prototype: the `quantile` of its own rows' similarities, each row left out of the prototype
//! it is compared with (so the threshold is not flattered by the row itself). An embedding
//! whose similarity to the chosen class falls below that class's threshold is "unknown".

use super::head::Head;

/// The open-set check of one head.
#[derive(Debug, Clone)]
pub struct OpenSet {
    dim: usize,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// Unit-norm prototypes `[C][D]` in standardised space.
    protos: Vec<Vec<f32>>,
    /// Per class: the lowest similarity still accepted.
    pub thresholds: Vec<f32>,
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl OpenSet {
    /// The check for `head` at `quantile` (0.05: a class's threshold lets 95 % of its own
    /// examples through). `None` when the head keeps no support set or `quantile` is not in
    /// `[0, 1)`. A class with fewer than 3 support rows accepts
    /// everything: its threshold would be a guess.
    pub fn from_head(head: &Head, quantile: f32) -> Option<Self> {
        let (d, c) = (head.dim, head.labels.len());
        let m = head.support_labels.len();
        if m == 0 || d == 0 || head.support.len() != m * d || !(0.0..1.0).contains(&quantile) {
            return None;
        }
        let mut mean = vec![0f32; d];
        for row in head.support.chunks(d) {
            for (a, x) in mean.iter_mut().zip(row) {
                *a += x / m as f32;
            }
        }
        let mut var = vec![0f32; d];
        for row in head.support.chunks(d) {
            for ((v, x), mu) in var.iter_mut().zip(row).zip(&mean) {
                *v += (x - mu) * (x - mu) / m as f32;
            }
        }
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v.sqrt() + 1e-6)).collect();
        let z: Vec<Vec<f32>> = head
            .support
            .chunks(d)
            .map(|row| {
                let mut z: Vec<f32> = row
                    .iter()
                    .zip(&mean)
                    .zip(&inv_std)
                    .map(|((x, mu), s)| (x - mu) * s)
                    .collect();
                normalise(&mut z);
                z
            })
            .collect();
        let mut sums = vec![vec![0f32; d]; c];
        let mut counts = vec![0usize; c];
        for (row, &label) in z.iter().zip(&head.support_labels) {
            let k = label as usize;
            if k >= c {
                return None;
            }
            counts[k] += 1;
            sums[k].iter_mut().zip(row).for_each(|(s, x)| *s += x);
        }
        let mut thresholds = vec![-1f32; c];
        for k in 0..c {
            if counts[k] < 3 {
                continue;
            }
            let mut sims: Vec<f32> = z
                .iter()
                .zip(&head.support_labels)
                .filter(|(_, &l)| l as usize == k)
                .map(|(row, _)| {
                    let mut loo: Vec<f32> = sums[k].iter().zip(row).map(|(s, x)| s - x).collect();
                    normalise(&mut loo);
                    dot(&loo, row)
                })
                .collect();
            sims.sort_by(f32::total_cmp);
            let at = ((sims.len() - 1) as f32 * quantile).floor() as usize;
            thresholds[k] = sims[at];
        }
        let protos = sums
            .into_iter()
            .map(|mut s| {
                normalise(&mut s);
                s
            })
            .collect();
        Some(Self {
            dim: d,
            mean,
            inv_std,
            protos,
            thresholds,
        })
    }

    /// Cosine similarity of `pooled` (a raw pooled embedding, as the head takes) to `class`'s
    /// prototype, in the standardised space. `scratch` is reused (no allocation once sized).
    pub fn similarity(&self, pooled: &[f32], class: usize, scratch: &mut Vec<f32>) -> f32 {
        scratch.clear();
        scratch.extend(
            pooled
                .iter()
                .zip(&self.mean)
                .zip(&self.inv_std)
                .map(|((x, mu), s)| (x - mu) * s),
        );
        normalise(scratch);
        match self.protos.get(class) {
            Some(p) if pooled.len() == self.dim => dot(p, scratch),
            _ => f32::NAN,
        }
    }

    /// Whether `pooled` may be called `class` (its similarity is at least the class's
    /// threshold), and that similarity.
    pub fn check(&self, pooled: &[f32], class: usize, scratch: &mut Vec<f32>) -> (bool, f32) {
        let s = self.similarity(pooled, class, scratch);
        (
            s >= self.thresholds.get(class).copied().unwrap_or(f32::INFINITY),
            s,
        )
    }

    /// Whether `pooled` may be called `class`: [`OpenSet::check`]'s verdict.
    pub fn accepts(&self, pooled: &[f32], class: usize, scratch: &mut Vec<f32>) -> bool {
        self.check(pooled, class, scratch).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes on two axes with a little spread: their own examples are accepted, a point
    /// on a third axis is not, and the threshold follows the quantile.
    #[test]
    fn own_examples_pass_and_strangers_do_not() {
        let d = 4;
        let mut head = Head::untrained(d);
        head.labels = vec!["a".into(), "b".into()];
        head.weight = vec![0.0; 2 * d];
        head.bias = vec![0.0; 2];
        let mut state = 7u32;
        let mut rnd = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for i in 0..40 {
            let k = i % 2;
            let mut row = vec![0.1 * rnd(), 0.1 * rnd(), 0.1 * rnd(), 0.1 * rnd()];
            row[k] += 1.0;
            head.support.extend(row);
            head.support_labels.push(k as u32);
        }
        let os = OpenSet::from_head(&head, 0.05).unwrap();
        let mut s = Vec::new();
        assert!(os.accepts(&[1.0, 0.0, 0.0, 0.0], 0, &mut s));
        assert!(os.accepts(&[0.0, 1.0, 0.0, 0.0], 1, &mut s));
        assert!(!os.accepts(&[0.0, 1.0, 0.0, 0.0], 0, &mut s));
        assert!(!os.accepts(&[0.0, 0.0, 1.0, 0.0], 0, &mut s));
        let strict = OpenSet::from_head(&head, 0.5).unwrap();
        assert!(strict.thresholds[0] >= os.thresholds[0]);
        // 95 % of a class's own rows pass at quantile 0.05 (leave-one-out makes it a little less).
        let passed = head
            .support
            .chunks(d)
            .zip(&head.support_labels)
            .filter(|(r, &l)| os.accepts(r, l as usize, &mut s))
            .count();
        assert!(passed >= 36, "{passed} of 40");
        // No support set, a bad quantile: no check.
        assert!(OpenSet::from_head(&Head::untrained(d), 0.05).is_none());
        assert!(OpenSet::from_head(&head, 1.0).is_none());
    }
}
