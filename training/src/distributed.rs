//! Data-parallel pretraining: one process per GPU, gradients averaged over the ranks before the
//! optimiser, so every rank holds the same weights and the same EMA target (the DDP recipe).
//!
//! The collective sits behind [`Collective`] (all-reduce, broadcast, barrier): [`SingleProcess`]
//! for one rank, [`ThreadGroup`] for several ranks as threads of one process (the tests, on the
//! CPU), and NCCL behind the `nccl` feature ([`nccl::NcclGroup`], through candle's cudarc). Ranks
//! are launched as PyTorch jobs are (torchrun, Slurm's `srun`): `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, and the NCCL unique id exchanged at `MASTER_ADDR:MASTER_PORT` or through a file
//! on a shared path (see `rendezvous`).
//!
//! The data split needs no communication: batch `s` of a run is a pure function of `(seed, s)`
//! (the loader), and rank `r` of `W` trains on the batches `k W + r` at its step `k`, so each
//! batch the single-process run would make is used exactly once, by one rank.

use std::sync::{Arc, Barrier, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("launch environment: {0}")]
    Env(String),
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    #[error("collective: {0}")]
    Collective(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The operations data-parallel training needs from a process group. Every rank calls the same
/// operations in the same order with tensors of the same shape and dtype.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The element-wise sum of `t` over the ranks, on every rank (same shape, dtype, device).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError>;
    /// Rank `root`'s `t`, on every rank.
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor, DistError>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), DistError>;
    /// Rank 0 alone logs, plots and writes checkpoints.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
}

/// One rank: every operation is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError> {
        Ok(t.clone())
    }
    fn broadcast(&self, t: &Tensor, _root: usize) -> Result<Tensor, DistError> {
        Ok(t.clone())
    }
    fn barrier(&self) -> Result<(), DistError> {
        Ok(())
    }
}

/// Ranks as threads of one process, exchanging host copies: the collective of the tests (and of
/// a user checking a multi-rank configuration on a CPU). Sums run in rank order on every rank, so
/// every rank gets bit-identical results.
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f32>>>,
}

impl ThreadGroup {
    /// `world` handles, one per rank (hand handle `r` to the thread of rank `r`).
    pub fn new(world: usize) -> Vec<ThreadGroup> {
        let world = world.max(1);
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world),
            slots: Mutex::new(vec![Vec::new(); world]),
        });
        (0..world)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Publishes this rank's values, waits for every rank, returns `f(all ranks' values)`, and
    /// waits again so that no rank publishes the next operation's values before all have read.
    fn exchange<R>(&self, mine: Vec<f32>, f: impl FnOnce(&[Vec<f32>]) -> R) -> R {
        let poisoned = |e: std::sync::PoisonError<_>| e.into_inner();
        self.shared.slots.lock().unwrap_or_else(poisoned)[self.rank] = mine;
        self.shared.barrier.wait();
        let out = f(&self.shared.slots.lock().unwrap_or_else(poisoned));
        self.shared.barrier.wait();
        out
    }
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>, DistError> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn like(values: Vec<f32>, t: &Tensor) -> Result<Tensor, DistError> {
    Ok(Tensor::from_vec(values, t.shape(), t.device())?.to_dtype(t.dtype())?)
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.slots.lock().map_or(1, |s| s.len())
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let mine = host_f32(t)?;
        let n = mine.len();
        let sum = self.exchange(mine, |all| {
            if all.iter().any(|v| v.len() != n) {
                return Err(DistError::Collective(format!(
                    "all-reduce of tensors of different sizes: {:?}",
                    all.iter().map(Vec::len).collect::<Vec<_>>()
                )));
            }
            let mut sum = vec![0f32; n];
            for v in all {
                for (s, x) in sum.iter_mut().zip(v) {
                    *s += x;
                }
            }
            Ok(sum)
        })?;
        like(sum, t)
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor, DistError> {
        let world = self.world_size();
        if root >= world {
            return Err(DistError::Collective(format!(
                "broadcast from rank {root} of {world}"
            )));
        }
        let mine = host_f32(t)?;
        let n = mine.len();
        let theirs = self.exchange(mine, |all| all[root].clone());
        if theirs.len() != n {
            return Err(DistError::Collective(format!(
                "broadcast of {} values into a tensor of {n}",
                theirs.len()
            )));
        }
        like(theirs, t)
    }
    fn barrier(&self) -> Result<(), DistError> {
        self.exchange(Vec::new(), |_| ());
        Ok(())
    }
}

/// Averages the gradients of `vars` over the ranks in place, with `extra` (the loss, any shape)
/// riding along in the same all-reduce: one collective per step, and nothing leaves the device.
/// A variable without a gradient on this rank contributes zeros (every rank must send the same
/// layout). Returns the averaged `extra`, in its shape and dtype.
pub fn average_gradients(
    c: &dyn Collective,
    vars: &[Var],
    grads: &mut GradStore,
    extra: &Tensor,
) -> Result<Tensor, DistError> {
    let world = c.world_size();
    if world == 1 {
        return Ok(extra.clone());
    }
    let dev = extra.device().clone();
    let mut parts = Vec::with_capacity(vars.len() + 1);
    for v in vars {
        let g = match grads.get(v.as_tensor()) {
            Some(g) => g.to_dtype(DType::F32)?.flatten_all()?,
            None => Tensor::zeros(v.elem_count(), DType::F32, &dev)?,
        };
        parts.push(g);
    }
    parts.push(extra.to_dtype(DType::F32)?.flatten_all()?);
    let flat = Tensor::cat(&parts, 0)?;
    let mean = (c.all_reduce_sum(&flat)? / world as f64)?;
    let mut at = 0;
    for v in vars {
        let n = v.elem_count();
        let g = mean
            .narrow(0, at, n)?
            .reshape(v.shape())?
            .to_dtype(v.dtype())?;
        grads.insert(v.as_tensor(), g);
        at += n;
    }
    Ok(mean
        .narrow(0, at, extra.elem_count())?
        .reshape(extra.shape())?
        .to_dtype(extra.dtype())?)
}

/// Makes every rank's `vars` equal to rank 0's (at the start of a run, so that a rank whose
/// initialisation or `--init` differed cannot drift).
pub fn broadcast_vars(c: &dyn Collective, vars: &[Var]) -> Result<(), DistError> {
    if c.world_size() == 1 {
        return Ok(());
    }
    for v in vars {
        let t = c.broadcast(v.as_tensor(), 0)?;
        v.set(&t)?;
    }
    Ok(())
}

/// Where this process sits in a launch: read from the variables torchrun and Slurm set.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchEnv {
    pub rank: usize,
    pub world_size: usize,
    /// This node's GPU for the rank (`LOCAL_RANK`; Slurm: `SLURM_LOCALID`).
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`, when set.
    pub master: Option<(String, u16)>,
}

impl LaunchEnv {
    /// From the process environment (see [`LaunchEnv::from_vars`]).
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// `RANK` / `WORLD_SIZE` / `LOCAL_RANK` (torchrun), else Slurm's `SLURM_PROCID` /
    /// `SLURM_NTASKS` / `SLURM_LOCALID`; none of them is one rank of one. With several ranks,
    /// `MASTER_ADDR` and `MASTER_PORT` together, or neither.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let num = |keys: &[&str]| -> Result<Option<usize>, DistError> {
            for k in keys {
                if let Some(v) = get(k) {
                    return v.trim().parse::<usize>().map(Some).map_err(|_| {
                        DistError::Env(format!("{k}=`{v}` is not a non-negative integer"))
                    });
                }
            }
            Ok(None)
        };
        let world_size = num(&["WORLD_SIZE", "SLURM_NTASKS"])?.unwrap_or(1);
        let rank = num(&["RANK", "SLURM_PROCID"])?.unwrap_or(0);
        let local_rank = num(&["LOCAL_RANK", "SLURM_LOCALID"])?.unwrap_or(0);
        if world_size == 0 || world_size > 4096 {
            return Err(DistError::Env(format!(
                "WORLD_SIZE={world_size}: expected 1 to 4096 ranks"
            )));
        }
        if rank >= world_size {
            return Err(DistError::Env(format!(
                "RANK={rank} with WORLD_SIZE={world_size}: ranks are 0 to {}",
                world_size - 1
            )));
        }
        // One rank needs no rendezvous: stray MASTER_* variables in a shell do not matter then.
        let master = match (get("MASTER_ADDR"), get("MASTER_PORT")) {
            _ if world_size == 1 => None,
            (Some(a), Some(p)) => {
                let port = p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| {
                        DistError::Env(format!("MASTER_PORT=`{p}` is not a port (1-65535)"))
                    })?;
                if a.trim().is_empty() {
                    return Err(DistError::Env("MASTER_ADDR is empty".into()));
                }
                Some((a.trim().to_string(), port))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(DistError::Env(
                    "MASTER_ADDR is set but MASTER_PORT is not".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(DistError::Env(
                    "MASTER_PORT is set but MASTER_ADDR is not".into(),
                ))
            }
        };
        Ok(Self {
            rank,
            world_size,
            local_rank,
            master,
        })
    }
}

/// Rank `rank` of `world`'s batch index at its step `step`: the batches of the single-process
/// run, dealt round-robin.
pub fn batch_index(step: u64, rank: usize, world: usize) -> u64 {
    step * world.max(1) as u64 + rank as u64
}

#[cfg(feature = "nccl")]
pub mod nccl;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(map: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            map.iter()
                .find(|(a, _)| *a == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_launch_environment_is_read_like_torchrun_and_slurm() {
        let single = LaunchEnv::from_vars(vars(&[])).unwrap();
        assert_eq!(
            (single.rank, single.world_size, single.master),
            (0, 1, None)
        );
        let e = LaunchEnv::from_vars(vars(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node17"),
            ("MASTER_PORT", "29500"),
        ]))
        .unwrap();
        assert_eq!(
            e,
            LaunchEnv {
                rank: 3,
                world_size: 8,
                local_rank: 1,
                master: Some(("node17".into(), 29500))
            }
        );
        let slurm = LaunchEnv::from_vars(vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "6"),
            ("SLURM_LOCALID", "2"),
        ]))
        .unwrap();
        assert_eq!((slurm.rank, slurm.world_size, slurm.local_rank), (5, 6, 2));
        for (bad, says) in [
            (vec![("RANK", "2"), ("WORLD_SIZE", "2")], "ranks are 0 to 1"),
            (vec![("WORLD_SIZE", "two")], "not a non-negative integer"),
            (vec![("WORLD_SIZE", "0")], "1 to 4096"),
            (
                vec![("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
                "MASTER_PORT is not",
            ),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "not a port",
            ),
        ] {
            let err = LaunchEnv::from_vars(vars(&bad)).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn batches_are_dealt_round_robin_and_each_used_once() {
        // Three ranks for 5 steps use the single-process run's first 15 batches, once each.
        let mut seen = vec![0; 15];
        for rank in 0..3 {
            for step in 0..5 {
                seen[batch_index(step, rank, 3) as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        assert_eq!(batch_index(7, 0, 1), 7);
    }

    #[test]
    fn thread_ranks_sum_broadcast_and_meet() {
        let group = ThreadGroup::new(3);
        let out: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank() as f32;
                        let t = Tensor::new(&[r, 10.0 * r], &candle_core::Device::Cpu).unwrap();
                        let sum = g.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap();
                        g.barrier().unwrap();
                        let b = g.broadcast(&t, 2).unwrap().to_vec1::<f32>().unwrap();
                        (sum, b)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, b) in out {
            assert_eq!(sum, vec![3.0, 30.0]);
            assert_eq!(b, vec![2.0, 20.0]);
        }
        assert_eq!(group[1].world_size(), 3);
        assert!(group[0].is_main() && !group[1].is_main());
    }
}
