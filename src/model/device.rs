//! The device a model runs on, named as users write it: `cpu`, `cuda` (device 0), `cuda:N`.
//! A name that needs CUDA on a build without it is an error that says how to get it.

use crate::error::Result;
use candle_core::{Device, DeviceLocation};

/// The device names every front end accepts.
pub const DEVICE_NAMES: &str = "cpu, cuda, cuda:N";

/// Whether this build has candle's CUDA backend (the `cuda` cargo feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Opens the device `name` names. CUDA devices are opened here, so a missing driver or a
/// device number past the last GPU is reported at the option, not at the first tensor.
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => open_cuda(name, 0),
        _ => {
            let Some(n) = name.strip_prefix("cuda:") else {
                return Err(crate::invalid!(
                    "unknown device '{name}' (expected one of: {DEVICE_NAMES})"
                ));
            };
            let ordinal = n.parse::<usize>().map_err(|_| {
                crate::invalid!(
                    "device '{name}': '{n}' is not a CUDA device number (expected cuda:0, cuda:1, ...)"
                )
            })?;
            open_cuda(name, ordinal)
        }
    }
}

/// The name [`parse_device`] reads back as `device`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Each GPU is opened once per process: candle tells devices apart by the handle, not the
/// number, so two handles on `cuda:0` would refuse each other's tensors.
#[cfg(feature = "cuda")]
fn open_cuda(name: &str, ordinal: usize) -> Result<Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPENED: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = opened.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = Device::new_cuda(ordinal)
        .map_err(|e| crate::invalid!("cannot open CUDA device '{name}': {e}"))?;
    opened.insert(ordinal, d.clone());
    Ok(d)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(name: &str, _ordinal: usize) -> Result<Device> {
    Err(crate::invalid!(
        "device '{name}': vene was built without CUDA; rebuild with --features cuda"
    ))
}
