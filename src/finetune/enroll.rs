//! Few-shot enrollment: a new class joins an existing head from a few clips. The head's support
//! set (a sample of the embeddings it was fitted on) and the new clips' embeddings are refitted
//! together with the linear probe, so the old classes keep their decision boundaries roughly
//! where they were and the new one gets its own; seconds on a CPU.

use super::probe::{support_subset, Probe, ProbeConfig};
use crate::model::head::Head;

/// Rows of the support set kept per class.
pub const SUPPORT_PER_CLASS: usize = 48;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnrollError {
    #[error("this head keeps no support set (it was not written by `ajepa finetune`), so it cannot be refitted; fine-tune a new head first")]
    NoSupport,
    #[error("embeddings of dimension {got} do not fit a head of dimension {want}")]
    Dim { got: usize, want: usize },
    #[error("no embeddings for `{0}`: the clips were silent or empty")]
    Empty(String),
    #[error("a class name must not be empty")]
    EmptyName,
}

/// A new head with `name` added (or, when `name` exists, with more examples of it), fitted on
/// the support set plus `new` (`n x dim`, row-major).
pub fn enroll(head: &Head, name: &str, new: &[f32], cfg: ProbeConfig) -> Result<Head, EnrollError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(EnrollError::EmptyName);
    }
    if head.support_labels.is_empty() {
        return Err(EnrollError::NoSupport);
    }
    let dim = head.dim;
    if new.is_empty() {
        return Err(EnrollError::Empty(name.to_string()));
    }
    if !new.len().is_multiple_of(dim) {
        return Err(EnrollError::Dim {
            got: new.len(),
            want: dim,
        });
    }
    let mut labels = head.labels.clone();
    let class = match labels.iter().position(|l| l == name) {
        Some(c) => c,
        None => {
            labels.push(name.to_string());
            labels.len() - 1
        }
    };
    let mut x = head.support.clone();
    let mut y: Vec<usize> = head.support_labels.iter().map(|&c| c as usize).collect();
    x.extend_from_slice(new);
    y.extend(std::iter::repeat_n(class, new.len() / dim));
    let probe = Probe::fit(&x, &y, dim, labels.len(), cfg);
    let (sx, sy) = support_subset(&x, &y, dim, SUPPORT_PER_CLASS);
    let mut out = probe.to_head(labels, head.pool);
    out.support = sx;
    out.support_labels = sy;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pooling::Pooling;

    fn blobs(centres: &[usize], per: usize, dim: usize, seed: u32) -> (Vec<f32>, Vec<usize>) {
        let mut s = seed;
        let mut r = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..per * centres.len() {
            let c = i % centres.len();
            for d in 0..dim {
                x.push(if d == centres[c] { 2.0 } else { 0.0 } + r());
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn an_enrolled_class_is_recognised_and_old_ones_kept() {
        let dim = 6;
        let (x, y) = blobs(&[0, 1, 2], 40, dim, 1);
        let probe = Probe::fit(&x, &y, dim, 3, ProbeConfig::default());
        let mut head = probe.to_head(vec!["a".into(), "b".into(), "c".into()], Pooling::Mean);
        assert_eq!(
            enroll(&head, "d", &x[..dim], ProbeConfig::default()),
            Err(EnrollError::NoSupport)
        );
        let (sx, sy) = support_subset(&x, &y, dim, SUPPORT_PER_CLASS);
        head.support = sx;
        head.support_labels = sy;
        // Five examples of a new sound along axis 4.
        let (new, _) = blobs(&[4], 5, dim, 2);
        let h2 = enroll(&head, "door knock", &new, ProbeConfig::default()).unwrap();
        assert_eq!(h2.labels, ["a", "b", "c", "door knock"]);
        let (test_new, _) = blobs(&[4], 20, dim, 3);
        let (test_old, test_y) = blobs(&[0, 1, 2], 20, dim, 4);
        let argmax = |v: &[f32]| {
            let mut out = Vec::new();
            h2.scores_into(v, &mut out);
            (0..out.len())
                .max_by(|&a, &b| out[a].total_cmp(&out[b]))
                .unwrap()
        };
        assert!(test_new.chunks(dim).all(|v| argmax(v) == 3));
        let old_ok = test_old
            .chunks(dim)
            .zip(&test_y)
            .filter(|(v, &c)| argmax(v) == c)
            .count();
        assert!(old_ok >= 57, "{old_ok} / 60");
        assert!(matches!(
            enroll(&h2, "x", &new[..5], ProbeConfig::default()),
            Err(EnrollError::Dim { .. })
        ));
        assert_eq!(
            enroll(&h2, " ", &new, ProbeConfig::default()),
            Err(EnrollError::EmptyName)
        );
    }
}
