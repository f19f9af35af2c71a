//! NCCL through candle's cudarc (the `nccl` feature): the collective of multi-GPU pretraining.
//!
//! One process per GPU; rank 0 makes the unique id and hands it out (`rendezvous`), then every
//! rank joins the communicator on its device's stream. The collectives run as candle custom ops
//! on CUDA storage, so the tensors never leave the GPU (candle's multiprocess llama example
//! takes the same route). No GPU was lent while this was written: it is type-checked in CI
//! (`scripts/build-cuda.sh --check` with `nccl`), its logic shared with the tested CPU paths.

use std::time::Duration;

use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

use super::{Collective, DistError, LaunchEnv};
use crate::rendezvous;

/// How long ranks wait for each other while the group forms.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(600);

pub struct NcclGroup {
    comm: std::rc::Rc<Comm>,
    device: Device,
    rank: usize,
    world: usize,
}

/// How the unique id travels.
pub enum Rendezvous<'a> {
    /// `MASTER_ADDR:MASTER_PORT` (rank 0 listens).
    Tcp,
    /// A file on a path every rank sees.
    File(&'a std::path::Path),
}

impl NcclGroup {
    /// Joins the group described by `env` on `device` (the rank's CUDA device).
    pub fn join(env: &LaunchEnv, device: &Device, how: Rendezvous) -> Result<Self, DistError> {
        let cuda = device
            .as_cuda_device()
            .map_err(|e| DistError::Collective(format!("NCCL needs a CUDA device: {e}")))?;
        let nccl = |e: candle_core::cuda_backend::cudarc::nccl::result::NcclError| {
            DistError::Collective(format!("NCCL: {e:?}"))
        };
        let id = if env.rank == 0 {
            let id = Id::new().map_err(nccl)?;
            let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            match how {
                Rendezvous::File(p) => rendezvous::publish_file(p, &bytes)?,
                Rendezvous::Tcp => {
                    let (_, port) = env.master.clone().ok_or_else(|| {
                        DistError::Env(
                            "set MASTER_ADDR and MASTER_PORT, or --rendezvous-file".into(),
                        )
                    })?;
                    rendezvous::serve_tcp(port, env.world_size, &bytes, RENDEZVOUS_TIMEOUT)?
                }
            }
            id
        } else {
            let bytes = match how {
                Rendezvous::File(p) => rendezvous::read_file(p, RENDEZVOUS_TIMEOUT)?,
                Rendezvous::Tcp => {
                    let (addr, port) = env.master.clone().ok_or_else(|| {
                        DistError::Env(
                            "set MASTER_ADDR and MASTER_PORT, or --rendezvous-file".into(),
                        )
                    })?;
                    rendezvous::fetch_tcp(&addr, port, RENDEZVOUS_TIMEOUT)?
                }
            };
            if bytes.len() != 128 {
                return Err(DistError::Rendezvous(format!(
                    "an NCCL id of {} bytes (expected 128)",
                    bytes.len()
                )));
            }
            let mut internal = [0 as std::ffi::c_char; 128];
            for (d, s) in internal.iter_mut().zip(&bytes) {
                *d = *s as std::ffi::c_char;
            }
            Id::uninit(internal)
        };
        let comm =
            Comm::from_rank(cuda.cuda_stream(), env.rank, env.world_size, id).map_err(nccl)?;
        Ok(Self {
            comm: std::rc::Rc::new(comm),
            device: device.clone(),
            rank: env.rank,
            world: env.world_size,
        })
    }
}

/// The all-reduce (sum) or broadcast as a candle op on CUDA f32 storage.
struct NcclOp {
    comm: std::rc::Rc<Comm>,
    broadcast_root: Option<usize>,
}

impl CustomOp1 for NcclOp {
    fn name(&self) -> &'static str {
        if self.broadcast_root.is_some() {
            "nccl-broadcast"
        } else {
            "nccl-all-reduce"
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL collectives run on CUDA tensors only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("NCCL collectives need a contiguous tensor");
        };
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        let dev = &s.device;
        let mut dst = dev.alloc_zeros::<f32>(end - start)?;
        let r = match self.broadcast_root {
            None => self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
            // NCCL reads the send buffer on the root only; every rank passes its own.
            Some(root) => self.comm.broadcast(Some(&src), &mut dst, root as i32),
        };
        r.map_err(|e| candle_core::Error::Msg(format!("NCCL: {e:?}")))?;
        debug_assert_eq!(dst.len(), end - start);
        Ok((
            CudaStorage::wrap_cuda_slice(dst, dev.clone()),
            l.shape().clone(),
        ))
    }
}

impl NcclGroup {
    fn run(&self, t: &Tensor, broadcast_root: Option<usize>) -> Result<Tensor, DistError> {
        let dtype = t.dtype();
        let x = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let op = NcclOp {
            comm: self.comm.clone(),
            broadcast_root,
        };
        Ok(x.apply_op1_no_bwd(&op)?.to_dtype(dtype)?)
    }
}

impl Collective for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor, DistError> {
        self.run(t, None)
    }
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor, DistError> {
        self.run(t, Some(root))
    }
    fn barrier(&self) -> Result<(), DistError> {
        // An all-reduce of one value returns only once every rank has contributed.
        let one = Tensor::ones(1, candle_core::DType::F32, &self.device)?;
        self.run(&one, None)?.to_vec1::<f32>()?;
        Ok(())
    }
}
