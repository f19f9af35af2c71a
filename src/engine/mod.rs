//! The inference engine: the context encoder's forward pass on the CPU with its own kernels and
//! buffers sized once, for the streaming hot path and the latency benchmark.
//!
//! Why not candle here: a 48-token window is a few hundred small operations, and candle
//! allocates a tensor for each (about 1460 heap allocations per hop, measured) and has no int8
//! matrix product on the CPU. This engine computes the same function (tests compare it with
//! the candle encoder, which is itself checked against a PyTorch reference) from packed weights:
//! - [`gemm`]: f32 `x W^T + b` for AVX-512 and AVX2+FMA, with a portable fallback;
//! - [`qgemm`]: int8 weights (per output channel) times int8 activations (per token, dynamic),
//!   for AVX-512 VNNI and AVX2, with a portable fallback; integer sums are exact, so every
//!   path gives the same bits;
//! - [`math`]: layer norm, softmax, exact-erf GELU in branch-free forms the compiler vectorises;
//! - [`encoder`]: the ViT forward in preallocated [`encoder::Scratch`]; nothing is allocated per
//!   call.
//!
//! The kernels are chosen at run time ([`Isa::detect`]); `AJEPA_ISA=scalar|avx2|avx512|vnni`
//! caps the choice (for benchmarks and tests of the slower paths). NEON has no kernel yet: ARM
//! runs the portable fallback, which the compiler auto-vectorises.

pub mod encoder;
pub mod gemm;
pub mod math;
pub mod qgemm;
pub mod threads;

pub use encoder::{FastEncoder, Precision, Scratch};

/// Instruction-set levels with a kernel, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// Plain Rust, any CPU.
    Scalar,
    /// AVX2 and FMA (x86-64 since 2013).
    Avx2,
    /// AVX-512 F and BW.
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`: 64 int8 products per instruction).
    Avx512Vnni,
}

impl Isa {
    /// The best level this CPU supports, capped by `AJEPA_ISA` when set.
    pub fn detect() -> Self {
        let best = Self::supported();
        match std::env::var("AJEPA_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") => best.min(Isa::Avx2),
            Some("avx512") => best.min(Isa::Avx512),
            _ => best,
        }
    }

    /// The best level this CPU supports.
    pub fn supported() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw");
            if avx512 && std::arch::is_x86_feature_detected!("avx512vnni") {
                return Isa::Avx512Vnni;
            }
            if avx512 {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every level this CPU can run (for tests that compare each with the reference).
    pub fn all_supported() -> Vec<Isa> {
        let best = Self::supported();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }
}

/// Errors from building the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine: {0}")]
    Shape(String),
    #[error("engine: weight {name}: {reason}")]
    Weight { name: String, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
