//! [`VerbsRdma`]: the sysfs RDMA devices enriched with what only the verbs library answers (active MTU,
//! LID, the GID table, max queue pairs), merged by device name.
//!
//! sysfs decides what exists: a verbs device that sysfs does not show, or a port it does not list, is an
//! error entry. The library sits behind [`VerbsApi`]: `RealVerbs` (feature `verbs`: rdma-sys, linked to
//! `libibverbs.so.1`) on nodes, [`FakeVerbs`] (a fixture's recorded answers) in tests. When verbs cannot
//! be used (no device it can open, say in a container without `/dev/infiniband`), "unavailable" is said
//! once and discovery goes on from sysfs alone.

use std::collections::BTreeMap;

use hal::{Discovered, ErrorKind, InventoryError, RdmaDevice, RdmaGid, RdmaInfo, Result};

use crate::enrich::{Kept, Unavailable, disagreement, not_in_sysfs};
use crate::sysfs::rdma::parse_link_layer;

#[cfg(feature = "verbs")]
mod real;

#[cfg(feature = "verbs")]
pub use real::RealVerbs;

/// The library the real backend is linked to.
pub const LIBRARY: &str = "libibverbs.so.1";

/// What verbs says about one port (`ibv_query_port`, `ibv_query_gid`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerbsPort {
    /// Port number (from 1).
    pub number: u32,
    /// `link_layer`: `InfiniBand`, `Ethernet`, or `None` when unspecified.
    #[serde(default)]
    pub link_layer: Option<String>,
    /// Active MTU in bytes.
    #[serde(default)]
    pub active_mtu: Option<u32>,
    /// LID.
    pub lid: u16,
    /// Non-zero GID table entries.
    #[serde(default)]
    pub gids: Vec<RdmaGid>,
}

/// What verbs says about one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerbsDevice {
    /// `ibv_get_device_name` (`mlx5_0`).
    pub name: String,
    /// `max_qp` of `ibv_query_device`.
    #[serde(default)]
    pub max_qp: Option<u32>,
    /// Its ports.
    #[serde(default)]
    pub ports: Vec<VerbsPort>,
    /// Why the device could not be queried, when it could not.
    #[serde(default)]
    pub error: Option<String>,
}

/// The seam: the verbs calls the backend makes, all at once.
pub trait VerbsApi: Send + Sync {
    /// Every device verbs lists, or why verbs cannot be used.
    fn query(&self) -> std::result::Result<Vec<VerbsDevice>, String>;
}

/// Answers given in advance (a fixture's), or an error to play a missing library.
#[derive(Debug, Clone)]
pub struct FakeVerbs(pub std::result::Result<Vec<VerbsDevice>, String>);

impl VerbsApi for FakeVerbs {
    fn query(&self) -> std::result::Result<Vec<VerbsDevice>, String> {
        self.0.clone()
    }
}

/// RDMA devices from another backend (sysfs), enriched by verbs.
pub struct VerbsRdma<R> {
    base: R,
    api: Box<dyn VerbsApi>,
    unavailable: Unavailable,
}

impl<R: RdmaDevice> VerbsRdma<R> {
    /// Enriches `base` with `api`.
    pub fn new(base: R, api: Box<dyn VerbsApi>) -> Self {
        VerbsRdma {
            base,
            api,
            unavailable: Unavailable::default(),
        }
    }
}

impl<R: RdmaDevice> RdmaDevice for VerbsRdma<R> {
    fn rdma_devices(&self) -> Result<Discovered<RdmaInfo>> {
        let mut found = self.base.rdma_devices()?;
        if found.items.is_empty() {
            return Ok(found);
        }
        let fallback = "RDMA devices are described from sysfs alone";
        match self.api.query() {
            // libibverbs leaves out the devices whose `/dev/infiniband/uverbsN` it cannot open.
            Ok(devices) if devices.is_empty() => {
                let why =
                    "verbs unavailable: libibverbs lists no device (no /dev/infiniband here?)";
                found
                    .errors
                    .extend(self.unavailable.report(LIBRARY, why, fallback));
            }
            Ok(devices) => merge(&mut found, &devices),
            Err(why) => found
                .errors
                .extend(self.unavailable.report(LIBRARY, &why, fallback)),
        }
        Ok(found)
    }
}

/// Fills in what verbs knows, by exact device name and port number. Disagreements, devices and ports
/// sysfs does not show, devices verbs does not list and devices it could not query become errors.
pub fn merge(found: &mut Discovered<RdmaInfo>, devices: &[VerbsDevice]) {
    let mut by_name: BTreeMap<&str, &VerbsDevice> =
        devices.iter().map(|d| (d.name.as_str(), d)).collect();
    for device in &mut found.items {
        let Some(verbs) = by_name.remove(device.name.as_str()) else {
            found.errors.push(InventoryError {
                path: format!("verbs/{}", device.name),
                error: format!(
                    "libibverbs does not list {} (its /dev/infiniband/uverbs node cannot be \
                     opened here?); described from sysfs alone",
                    device.name
                ),
                kind: Some(ErrorKind::NotFound),
            });
            continue;
        };
        if let Some(why) = &verbs.error {
            found.errors.push(InventoryError {
                path: format!("verbs/{}", device.name),
                error: format!("verbs could not query {}: {why}", device.name),
                kind: Some(ErrorKind::Io),
            });
            continue;
        }
        device.max_qp = verbs.max_qp;
        for vport in &verbs.ports {
            let path = format!("verbs/{}/{}", device.name, vport.number);
            let Some(port) = device.ports.iter_mut().find(|p| p.number == vport.number) else {
                let what = format!("port {} of {}", vport.number, device.name);
                found.errors.push(not_in_sysfs(path, "verbs", &what));
                continue;
            };
            let theirs = vport.link_layer.as_deref().map(parse_link_layer);
            if let (Some(ours), Some(theirs)) = (&port.link_layer, &theirs)
                && ours != theirs
            {
                let (ours, theirs) = (format!("{ours:?}"), format!("{theirs:?}"));
                let kept = Kept::Library;
                found.errors.push(disagreement(
                    path,
                    "link layer",
                    ours,
                    theirs,
                    "verbs",
                    kept,
                ));
            }
            port.link_layer = theirs.or(port.link_layer.take());
            port.active_mtu = vport.active_mtu;
            port.lid = Some(vport.lid);
            port.gids = vport.gids.clone();
        }
    }
    for name in by_name.keys() {
        let what = format!("a device {name}");
        found
            .errors
            .push(not_in_sysfs(format!("verbs/{name}"), "verbs", &what));
    }
}

/// `ibv_mtu` (1 = 256 … 5 = 4096) in bytes; `None` for a value outside the enum.
pub fn mtu_bytes(ibv_mtu: u32) -> Option<u32> {
    (1..=5).contains(&ibv_mtu).then(|| 128 << ibv_mtu)
}

/// A raw GID as sysfs prints it: eight groups of four hex digits.
pub fn gid_text(raw: &[u8; 16]) -> String {
    let groups: Vec<String> = raw
        .chunks_exact(2)
        .map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    groups.join(":")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
