//! What a claim's CDI spec gives its containers: the environment of the claim and the device nodes
//! of each device.

use super::super::cdi::{ContainerEdits, DeviceNode};
use super::super::claims::Allocated;
use crate::slices::devices::DeviceSource;

/// The environment every container of the claim gets, whichever of its devices it uses:
/// `DRA_HAL_DEVICES` (all device names), `GPU_DEVICE_<i>` per GPU, `NVIDIA_VISIBLE_DEVICES` (UUIDs, for
/// the NVIDIA container toolkit), and for RDMA devices `DRA_HAL_RDMA_DEVICES` and `NCCL_IB_HCA` (with
/// NCCL's `=` prefix for exact names, so `mlx5_1` never selects `mlx5_10`), and per network function
/// `DRA_HAL_NIC_<i>_PCI_ADDRESS`, `_NETDEV`, `_IFNAME` (the name in the pod: the NetworkConfig's
/// `interface.name`, else the VfConfig's `ifName`) and from its VfConfig `_NETWORK` (`namespace/name`
/// of the NetworkAttachmentDefinition), for a CNI to attach it.
pub(super) fn claim_env(allocated: &[Allocated], sources: &[DeviceSource]) -> Vec<String> {
    // A device that serves two requests (a CPU group; two with admin access) is named once.
    let mut seen = std::collections::BTreeSet::new();
    let devices: Vec<(&Allocated, &DeviceSource)> = allocated
        .iter()
        .zip(sources)
        .filter(|(a, _)| seen.insert(a.device.as_str()))
        .collect();
    let names: Vec<&str> = devices.iter().map(|(a, _)| a.device.as_str()).collect();
    let mut env = vec![format!("DRA_HAL_DEVICES={}", names.join(","))];
    let mut uuids = Vec::new();
    let mut rdma = Vec::new();
    let mut gpu_index = 0;
    let mut nic_index = 0;
    for (a, source) in devices {
        match source {
            DeviceSource::Gpu(gpu) => {
                env.push(format!("GPU_DEVICE_{gpu_index}={}", a.device));
                gpu_index += 1;
                if let Some(uuid) = gpu.uuid.as_ref().filter(|_| gpu.nvidia_minor.is_some()) {
                    uuids.push(uuid.clone());
                }
            }
            DeviceSource::Nic { function, rdma: r } => {
                let vfio = a.vf.as_ref().and_then(|v| v.driver.as_deref()) == Some("vfio-pci");
                if let (Some(r), false) = (r, vfio) {
                    rdma.push(r.name.clone());
                }
                let i = nic_index;
                nic_index += 1;
                env.push(format!("DRA_HAL_NIC_{i}_PCI_ADDRESS={}", function.address));
                if let (Some(netdev), false) = (function.netdevs.first(), vfio) {
                    env.push(format!("DRA_HAL_NIC_{i}_NETDEV={netdev}"));
                }
                if let Some(name) = super::network::pod_if_name(a) {
                    env.push(format!("DRA_HAL_NIC_{i}_IFNAME={name}"));
                }
                if let Some(network) = a.vf.as_ref().and_then(|v| v.network_attachment()) {
                    env.push(format!("DRA_HAL_NIC_{i}_NETWORK={network}"));
                }
            }
            _ => {}
        }
    }
    if !uuids.is_empty() {
        env.push(format!("NVIDIA_VISIBLE_DEVICES={}", uuids.join(",")));
    }
    if !rdma.is_empty() {
        env.push(format!("DRA_HAL_RDMA_DEVICES={}", rdma.join(",")));
        env.push(format!("NCCL_IB_HCA=={}", rdma.join(",")));
    }
    env
}

/// The device nodes a container needs for a device: the NVIDIA nodes of an NVIDIA GPU, the DRM nodes
/// and their `/dev/dri/by-path` links of a DRM GPU, the verbs/MAD nodes and `rdma_cm` of an RDMA
/// function; for a function bound to vfio-pci, its VFIO group instead.
pub(super) fn container_edits(
    source: &DeviceSource,
    vfio_group: Option<Option<u32>>,
) -> ContainerEdits {
    let mut edits = ContainerEdits::default();
    let node = |path: String| DeviceNode {
        path,
        ..Default::default()
    };
    if let Some(group) = vfio_group {
        // Passthrough (a VM, KubeVirt): the function's VFIO group and the VFIO container node; no
        // driver node, netdev or RDMA device remains once vfio-pci holds it.
        if let Some(group) = group {
            edits.device_nodes.push(node(format!("/dev/vfio/{group}")));
        }
        edits.device_nodes.push(node("/dev/vfio/vfio".to_owned()));
        return edits;
    }
    match source {
        DeviceSource::Gpu(gpu) => {
            if let Some(minor) = gpu.nvidia_minor {
                edits.device_nodes.push(node(format!("/dev/nvidia{minor}")));
                for shared in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"] {
                    edits.device_nodes.push(node(shared.to_owned()));
                }
            }
            for drm in [&gpu.drm_card, &gpu.drm_render].into_iter().flatten() {
                edits.device_nodes.push(node(format!("/dev/dri/{drm}")));
            }
            // The udev links Intel's tools and oneAPI look up by PCI address.
            for (node_name, suffix) in [(&gpu.drm_card, "card"), (&gpu.drm_render, "render")] {
                if node_name.is_some() {
                    let link = format!("/dev/dri/by-path/pci-{}-{suffix}", gpu.pci_address);
                    edits.device_nodes.push(node(link));
                }
            }
        }
        DeviceSource::Nic {
            rdma: Some(rdma), ..
        } => {
            for c in &rdma.char_devices {
                let mut n = node(c.path.clone());
                if let Some((major, minor)) = c.dev {
                    n.r#type = Some("c".into());
                    n.major = Some(i64::from(major));
                    n.minor = Some(i64::from(minor));
                }
                edits.device_nodes.push(n);
            }
            edits.env.push(format!("DRA_HAL_RDMA_DEVICE={}", rdma.name));
        }
        // Partitions are prepared as the GPUs (VFs) they are, never as partitions.
        DeviceSource::Nic { rdma: None, .. }
        | DeviceSource::GpuPartition { .. }
        | DeviceSource::Cpu(_)
        | DeviceSource::CpuGroup(_)
        | DeviceSource::RtGroup { .. } => {}
    }
    edits
}
