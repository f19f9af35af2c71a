//! AdamW with its state exposed, so a checkpoint can save it and a resumed run continues exactly.
//!
//! Decoupled weight decay (Loshchilov & Hutter), as PyTorch's `torch.optim.AdamW`:
//! `p -= lr * wd * p`, then `p -= lr * m_hat / (sqrt(v_hat) + eps)`. As in I-JEPA
//! (src/helper.py `init_opt`), biases and other 1-D parameters get no weight decay; nor does the
//! predictor's mask token (as in the PyTorch reference run, ../shared/reference/jepa-pytorch
//! jepa.py: it is one learned query, not a weight matrix, and decaying it only shrinks it).

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Result, Tensor, Var};

#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

pub struct AdamW {
    slots: Vec<Slot>,
    params: AdamWParams,
    /// Completed updates (bias correction uses `t = step + 1`).
    pub step: u64,
}

impl AdamW {
    /// `vars` sorted by name for a stable order.
    pub fn new(mut vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Slot {
                    decay: var.as_tensor().rank() > 1 && !name.ends_with("mask_token"),
                    m: zeros.clone(),
                    v: zeros,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            params,
            step: 0,
        })
    }

    /// Squared L2 norm of all gradients, as a scalar f32 tensor on their device (summed there,
    /// so reading it is one transfer, not one per parameter).
    pub fn grad_sq_norm(&self, grads: &GradStore) -> Result<Tensor> {
        let sums = self
            .slots
            .iter()
            .filter_map(|s| grads.get(s.var.as_tensor()))
            .map(|g| g.to_dtype(candle_core::DType::F32)?.sqr()?.sum_all())
            .collect::<Result<Vec<_>>>()?;
        match sums.is_empty() {
            true => candle_core::bail!("no gradients for any parameter"),
            false => Tensor::stack(&sums, 0)?.sum_all(),
        }
    }

    /// One update with learning rate `lr`, weight decay `wd`, gradients scaled by `grad_scale`
    /// (for clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, wd: f64, grad_scale: f64) -> Result<()> {
        let AdamWParams { beta1, beta2, eps } = self.params;
        let t = (self.step + 1) as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2 = 1.0 - beta2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = if grad_scale != 1.0 {
                (g * grad_scale)?
            } else {
                g.clone()
            };
            s.m = ((&s.m * beta1)? + (&g * (1.0 - beta1))?)?;
            s.v = ((&s.v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let update = ((&s.m / bc1)? / ((&s.v / bc2)?.sqrt()? + eps)?)?;
            let p = s.var.as_tensor();
            let p = if s.decay && wd != 0.0 {
                (p * (1.0 - lr * wd))?
            } else {
                p.clone()
            };
            s.var.set(&(p - (update * lr)?)?)?;
        }
        self.step += 1;
        Ok(())
    }

    /// The moments, named `m.NAME` and `v.NAME`, for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`]; every slot must be present with its shape.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            for (prefix, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let t = state.get(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimizer state lacks {key}"))
                })?;
                if t.shape() != dst.shape() {
                    candle_core::bail!(
                        "optimizer state {key}: shape {:?}, expected {:?}",
                        t.shape(),
                        dst.shape()
                    );
                }
                *dst = t.to_device(dst.device())?;
            }
        }
        self.step = step;
        Ok(())
    }
}
