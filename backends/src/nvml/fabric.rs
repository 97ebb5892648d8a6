//! The NVLink fabric clique of a GPU (`nvmlDeviceGetGpuFabricInfo`), which nvml-wrapper 0.13 loads but
//! does not wrap. GPUs of one clique share a multi-node NVLink domain (GB200/GB300 NVL racks).
#![allow(unsafe_code)]

use nvml_wrapper_sys::bindings::{
    NVML_GPU_FABRIC_STATE_COMPLETED, NVML_GPU_FABRIC_STATE_NOT_SUPPORTED, nvmlGpuFabricInfo_t,
    nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED as NVML_ERROR_NOT_SUPPORTED,
    nvmlReturn_enum_NVML_SUCCESS as NVML_SUCCESS,
};

/// `<cluster UUID>.<clique id>`, as NVIDIA's DRA driver names a clique, when NVML says the GPU's fabric
/// registration is complete and its cluster UUID is not all zeros; `None` on GPUs without a fabric and
/// drivers without the call; an error while the registration is not complete or has failed.
pub fn clique(
    nvml: &nvml_wrapper::Nvml,
    device: &nvml_wrapper::Device<'_>,
) -> Result<Option<String>, String> {
    let Ok(call) = nvml.lib().nvmlDeviceGetGpuFabricInfo.as_ref() else {
        return Ok(None);
    };
    let mut info = nvmlGpuFabricInfo_t {
        clusterUuid: [0; 16],
        status: 0,
        cliqueId: 0,
        state: 0,
    };
    // SAFETY: the handle belongs to `nvml`, which is alive, and `info` is a live structure of the
    // version-1 layout this symbol takes.
    let rc = unsafe { call(device.handle(), &raw mut info) };
    match rc {
        NVML_SUCCESS => {}
        NVML_ERROR_NOT_SUPPORTED => return Ok(None),
        rc => return Err(format!("nvmlDeviceGetGpuFabricInfo returned {rc}")),
    }
    match u32::from(info.state) {
        NVML_GPU_FABRIC_STATE_NOT_SUPPORTED => return Ok(None),
        NVML_GPU_FABRIC_STATE_COMPLETED => {}
        state => return Err(format!("registration not complete (state {state})")),
    }
    if info.status != NVML_SUCCESS {
        return Err(format!("registration failed (NVML status {})", info.status));
    }
    Ok(clique_name(
        u32::from(info.state),
        &info.clusterUuid,
        info.cliqueId,
    ))
}

/// The clique's name from the fields of `nvmlGpuFabricInfo_t`.
pub fn clique_name(state: u32, cluster_uuid: &[u8; 16], clique_id: u32) -> Option<String> {
    if state != NVML_GPU_FABRIC_STATE_COMPLETED || *cluster_uuid == [0; 16] {
        return None;
    }
    let hex: String = cluster_uuid.iter().map(|b| format!("{b:02x}")).collect();
    let (a, rest) = hex.split_at(8);
    let (b, rest) = rest.split_at(4);
    let (c, rest) = rest.split_at(4);
    let (d, e) = rest.split_at(4);
    Some(format!("{a}-{b}-{c}-{d}-{e}.{clique_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_registration_names_the_clique_as_nvidias_driver_does() {
        let uuid = [
            0x3b, 0x1f, 0x0a, 0x52, 0x7c, 0x44, 0x4e, 0x1d, 0x9a, 0x2b, 0x6f, 0x0e, 0x8d, 0x7c,
            0x00, 0x01,
        ];
        assert_eq!(
            clique_name(NVML_GPU_FABRIC_STATE_COMPLETED, &uuid, 32766).as_deref(),
            Some("3b1f0a52-7c44-4e1d-9a2b-6f0e8d7c0001.32766")
        );
    }

    #[test]
    fn no_clique_before_registration_completes_or_without_a_cluster() {
        let uuid = [7; 16];
        for state in 0..NVML_GPU_FABRIC_STATE_COMPLETED {
            assert_eq!(clique_name(state, &uuid, 1), None, "state {state}");
        }
        assert_eq!(
            clique_name(NVML_GPU_FABRIC_STATE_COMPLETED, &[0; 16], 1),
            None
        );
    }
}
