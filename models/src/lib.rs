//! maintcast's models: the LSTM forecaster (Candle network, fused CPU inference and training
//! kernels), its data path (`prep`: columns, arrival, fill, padding, scaling; histories, windows,
//! scalers), optimizers, metrics, the model artifact and the registry.

/// Defines `fn $name(args)` that runs `$body(args)` compiled for AVX2 + FMA when the CPU has them,
/// so the kernels' loops vectorise 8 lanes wide without building the crate for a newer baseline,
/// and as plain code otherwise. `$body` must be `#[inline(always)]` so each copy is compiled for
/// its own target.
macro_rules! avx2_dispatch {
    ($(#[$attr:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$attr])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `avx2` is compiled for.
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $body($($arg),*)
        }
    };
}

pub mod cpu_kernel;
mod fused;
pub mod fused_train;
#[cfg(target_arch = "x86_64")]
mod lstm_avx512;
pub mod network;
mod pooling;

pub mod accuracy;
pub mod artifact;
pub mod config;
pub mod cv;
pub mod dataset;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod forecaster;
pub mod history;
pub mod labels;
pub mod metrics;
pub mod optim;
pub mod pipeline;
pub mod prep;
pub mod regimes;
pub mod registry;
pub mod scaler;
pub mod smoothing;
mod splits;
mod stepwise;
pub mod train;

pub use artifact::{ModelCard, TargetSpec};
pub use cpu_kernel::{CpuKernel, Precision};
pub use error::ModelError;
pub use forecaster::{Forecast, Forecaster};
pub use history::{History, MachineHistory};
