//! Which CPU kernel `Network::predict` runs, and at which precision.
//!
//! The choice is made at run time from what the CPU supports: the AVX-512 microkernel
//! (`lstm_avx512`) where `avx512f` is present, the portable fused kernel (`fused`, AVX2 or plain)
//! elsewhere. Reduced precision (bf16 weights and inputs, f32 accumulation) is never picked on
//! its own: a model card asks for it (`inference_precision = "bf16"`) or the operator sets
//! `MAINTCAST_CPU_KERNEL=avx512-bf16`.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Arithmetic of the recurrent and input products at inference. The cell state and the
/// nonlinearities are f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Exact f32: agrees with PyTorch to 1e-5.
    #[default]
    F32,
    /// bf16 weights and layer inputs, f32 accumulation (`vdpbf16ps`). It halves the weight
    /// bytes a step streams, which is what bounds a single window (batch 1: ~1.4x faster here);
    /// at batch 64 and up it is slower than f32 on the Xeon it was measured on, where one
    /// `vdpbf16ps` (32 multiply-adds) takes as long as four f32 FMAs (64). Use only for a model
    /// whose accuracy held under it (BENCHMARKS.md, "bf16 accuracy guard").
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernel {
    /// `fused`: GEMMs from the `gemm` crate plus a vectorised gate pass; runs on any CPU.
    Portable,
    /// `lstm_avx512`, exact f32.
    Avx512,
    /// `lstm_avx512` with bf16 products.
    Avx512Bf16,
}

/// Environment variable that overrides the kernel for the whole process (`portable`, `avx512`,
/// `avx512-bf16`); meant for benchmarks and for checking the fallback on a machine that has
/// AVX-512.
pub const KERNEL_ENV: &str = "MAINTCAST_CPU_KERNEL";

impl CpuKernel {
    pub fn name(self) -> &'static str {
        match self {
            CpuKernel::Portable => "portable",
            CpuKernel::Avx512 => "avx512",
            CpuKernel::Avx512Bf16 => "avx512-bf16",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            CpuKernel::Portable,
            CpuKernel::Avx512,
            CpuKernel::Avx512Bf16,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }

    pub fn precision(self) -> Precision {
        match self {
            CpuKernel::Avx512Bf16 => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            CpuKernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 => crate::lstm_avx512::supported(false),
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512Bf16 => crate::lstm_avx512::supported(true),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest supported kernel at `precision`. A CPU without AVX-512 BF16 runs a bf16 model
    /// in exact f32 (more accurate, never less); one without AVX-512 runs the portable kernel.
    /// `MAINTCAST_CPU_KERNEL`, when set, wins (an unsupported or unknown value is ignored with a
    /// warning).
    pub fn best(precision: Precision) -> Self {
        if let Some(forced) = forced() {
            return forced;
        }
        choose(precision, Self::is_supported)
    }
}

/// The preference order behind [`CpuKernel::best`], with the CPU's abilities as a parameter so
/// that tests can play a CPU without AVX-512 (or without BF16).
fn choose(precision: Precision, supported: impl Fn(CpuKernel) -> bool) -> CpuKernel {
    let preferred: &[CpuKernel] = match precision {
        Precision::Bf16 => &[CpuKernel::Avx512Bf16, CpuKernel::Avx512],
        Precision::F32 => &[CpuKernel::Avx512],
    };
    preferred
        .iter()
        .copied()
        .find(|&k| supported(k))
        .unwrap_or(CpuKernel::Portable)
}

fn forced() -> Option<CpuKernel> {
    static FORCED: OnceLock<Option<CpuKernel>> = OnceLock::new();
    *FORCED.get_or_init(|| {
        let value = std::env::var(KERNEL_ENV).ok()?;
        match CpuKernel::parse(value.trim()) {
            Some(k) if k.is_supported() => {
                tracing::info!(kernel = k.name(), "CPU inference kernel set by {KERNEL_ENV}");
                Some(k)
            }
            Some(k) => {
                tracing::warn!(
                    kernel = k.name(),
                    "{KERNEL_ENV} asks for a kernel this CPU cannot run; choosing automatically"
                );
                None
            }
            None => {
                tracing::warn!(%value, "{KERNEL_ENV} is not portable, avx512 or avx512-bf16; ignored");
                None
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_gets_the_best_kernel_it_runs_and_never_silent_bf16() {
        let all = |_: CpuKernel| true;
        let no_bf16 = |k: CpuKernel| k != CpuKernel::Avx512Bf16;
        let no_avx512 = |k: CpuKernel| k == CpuKernel::Portable;
        assert_eq!(choose(Precision::F32, all), CpuKernel::Avx512);
        assert_eq!(choose(Precision::Bf16, all), CpuKernel::Avx512Bf16);
        assert_eq!(choose(Precision::Bf16, no_bf16), CpuKernel::Avx512);
        assert_eq!(choose(Precision::F32, no_avx512), CpuKernel::Portable);
        assert_eq!(choose(Precision::Bf16, no_avx512), CpuKernel::Portable);
    }

    #[test]
    fn kernel_names_round_trip() {
        for k in [
            CpuKernel::Portable,
            CpuKernel::Avx512,
            CpuKernel::Avx512Bf16,
        ] {
            assert_eq!(CpuKernel::parse(k.name()), Some(k));
        }
        assert_eq!(CpuKernel::parse("avx2"), None);
    }

    #[test]
    fn cards_without_a_precision_mean_f32() {
        #[derive(Deserialize)]
        struct Card {
            #[serde(default)]
            p: Precision,
        }
        let card: Card = serde_json::from_str("{}").unwrap();
        assert_eq!(card.p, Precision::F32);
        let card: Card = serde_json::from_str(r#"{"p": "bf16"}"#).unwrap();
        assert_eq!(card.p, Precision::Bf16);
    }
}
