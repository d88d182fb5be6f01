//! Device names, parsed once for every command: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, or `auto`
//! (CUDA 0 when this build has it and a GPU answers, else the CPU).

use std::str::FromStr;

use candle_core::Device;

use crate::error::{ModelError, Result};

/// A device as named on a command line or in `MAINTCAST_DEVICE`, before it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    Auto,
}

impl FromStr for DeviceSpec {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || ModelError::Config(format!("device {s:?}: want cpu, cuda, cuda:N or auto"));
        match s.trim() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "auto" => Ok(DeviceSpec::Auto),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl DeviceSpec {
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            DeviceSpec::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                ModelError::Config(format!(
                    "device cuda:{n}: {e} (CUDA needs a build with `--features cuda` and a GPU)"
                ))
            }),
        }
    }
}

/// Parses and opens a device name.
pub fn parse_device(s: &str) -> Result<Device> {
    s.parse::<DeviceSpec>()?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_command_accepts() {
        let p = |s: &str| s.parse::<DeviceSpec>();
        assert_eq!(p("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(p("auto").unwrap(), DeviceSpec::Auto);
        // The ingest and the training commands used to disagree on a bare `cuda`.
        assert_eq!(p("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(p("cuda:1").unwrap(), DeviceSpec::Cuda(1));
        assert_eq!(p(" cpu\n").unwrap(), DeviceSpec::Cpu);
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA0", ""] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.contains("want cpu, cuda, cuda:N or auto"), "{bad}: {e}");
        }
    }

    #[test]
    fn opening() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("auto").is_ok());
        assert!(parse_device("gpu").is_err());
        #[cfg(not(feature = "cuda"))]
        {
            let e = parse_device("cuda").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
