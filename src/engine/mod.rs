//! The inference engine: the context encoder's forward pass on the CPU with its own kernels and
//! buffers sized once, for the streaming hot path and the latency benchmark.
//!
//! Why not candle here: a 48-token window is a few hundred small operations, and candle
//! allocates a tensor for each (about 1460 heap allocations per hop, measured) and has no int8
//! matrix product on the CPU. This engine computes the same function (tests compare it with
//! the candle encoder, which is itself checked against a PyTorch reference) from packed weights:
//! - [`gemm`]: f32 `x W^T + b` for AVX-512, AVX2+FMA and NEON, with a portable fallback;
//! - [`gemm_bf16`]: the same product from bf16 operands with f32 sums (AVX-512 BF16), for the
//!   training ops only, when a run asks for it;
//! - [`qgemm`]: int8 weights (per output channel) times int8 activations (per token, dynamic),
//!   for AVX-512 VNNI, AVX2 and NEON `sdot`, with a portable fallback; integer sums are exact, so every
//!   path gives the same bits;
//! - [`math`]: layer norm, softmax, exact-erf GELU in branch-free forms the compiler vectorises;
//! - [`encoder`]: the ViT forward in preallocated [`encoder::Scratch`]; nothing is allocated per
//!   call.
//!
//! The kernels are chosen at run time ([`Isa::detect`]); `AJEPA_ISA=scalar|avx2|avx512|neon`
//! caps the choice (for benchmarks and tests of the slower paths). On AArch64 the f32 product
//! has a NEON kernel and the int8 one an `sdot` kernel (dot-product extension); the
//! element-wise functions are the portable code, which the compiler vectorises for NEON.

/// Evaluates `$body` with the constant `$r` bound to `$mr` (1 to 6: the rows of a micro-tile,
/// `MR` in [`gemm`] and [`qgemm`]). The kernels take the row count as a const generic so that
/// their accumulator arrays are unrolled into registers; this is the one place that turns the
/// run-time count into it.
macro_rules! with_rows {
    ($mr:expr, $r:ident => $body:expr) => {
        match $mr {
            6 => {
                const $r: usize = 6;
                $body
            }
            5 => {
                const $r: usize = 5;
                $body
            }
            4 => {
                const $r: usize = 4;
                $body
            }
            3 => {
                const $r: usize = 3;
                $body
            }
            2 => {
                const $r: usize = 2;
                $body
            }
            _ => {
                const $r: usize = 1;
                $body
            }
        }
    };
}
pub(crate) use with_rows;

pub mod encoder;
pub mod gemm;
pub mod gemm_bf16;
pub mod math;
pub mod qgemm;
pub mod threads;

pub use encoder::{FastEncoder, Precision, Scratch};

/// Instruction-set levels with a kernel. The x86-64 and AArch64 levels never meet: a CPU only
/// ever reports those of its own architecture, and the kernels test capabilities
/// ([`Isa::has_avx2`], [`Isa::has_neon`], ...) rather than comparing levels across them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// Plain Rust, any CPU (auto-vectorised for the architecture's baseline: SSE2, or NEON).
    Scalar,
    /// AVX2 and FMA (x86-64 since 2013).
    Avx2,
    /// AVX-512 F and BW.
    Avx512,
    /// AVX-512 with VNNI (`vpdpbusd`: 64 int8 products per instruction).
    Avx512Vnni,
    /// AArch64 Advanced SIMD (every 64-bit ARM CPU): f32 register-tiled kernel.
    Neon,
    /// NEON with the Armv8.2 dot-product extension (`sdot`: 16 int8 products per instruction):
    /// Cortex-A76 (Raspberry Pi 5), A78AE (Jetson Orin), Apple M1 and later.
    NeonDot,
}

impl Isa {
    /// The best level this CPU supports, capped by `AJEPA_ISA` when set
    /// (`scalar`, `avx2`, `avx512`, `neon`; anything else: no cap).
    pub fn detect() -> Self {
        let best = Self::supported();
        let cap = match std::env::var("AJEPA_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") => Isa::Avx2,
            Some("avx512") => Isa::Avx512,
            Some("neon") => Isa::Neon,
            _ => return best,
        };
        // The cap applies within this CPU's own list of levels (weakest first).
        Self::all_supported()
            .into_iter()
            .rev()
            .find(|&i| i.rank() <= cap.rank())
            .unwrap_or(Isa::Scalar)
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
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return Isa::NeonDot;
            }
            return Isa::Neon;
        }
        #[allow(unreachable_code)]
        Isa::Scalar
    }

    /// Every level this CPU can run, weakest first (for tests that compare each with the
    /// reference).
    pub fn all_supported() -> Vec<Isa> {
        let best = Self::supported();
        let ladder: &[Isa] = if best.has_neon() {
            &[Isa::Scalar, Isa::Neon, Isa::NeonDot]
        } else {
            &[Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni]
        };
        ladder
            .iter()
            .copied()
            .filter(|i| i.rank() <= best.rank())
            .collect()
    }

    /// Position within its architecture's ladder.
    fn rank(self) -> u8 {
        match self {
            Isa::Scalar => 0,
            Isa::Avx2 | Isa::Neon => 1,
            Isa::Avx512 | Isa::NeonDot => 2,
            Isa::Avx512Vnni => 3,
        }
    }

    /// AVX2 and FMA kernels can run.
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni)
    }

    /// AVX-512 F/BW kernels can run.
    pub fn has_avx512(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Avx512Vnni)
    }

    /// NEON kernels can run.
    pub fn has_neon(self) -> bool {
        matches!(self, Isa::Neon | Isa::NeonDot)
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon+dotprod",
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
