//! Pod networking and the node's own network: the driver's policy over the `dra-podnet` kit.
//!
//! The kit (`dra_podnet`, re-exported here as [`direct`], [`netlink`], [`rdma`], [`moved`],
//! [`hostnet`], [`error`] and, with the driver's flags, [`cni`]) moves netdevs into pod namespaces and
//! back and reads the node's network; this module decides which functions and how:
//!
//! [`NodeGuard`] withholds from the inventory, before anything is published or prepared, the PCI
//! functions of the node's own network ([`hostnet`]: default routes, InternalIP, their bridge/bond
//! members), those `--exclude-interfaces` names, and those `--device-filter` ([`filter`]) does not
//! select. A function not in the inventory is neither published nor rebound nor moved.
//!
//! Direct mode ([`direct`], dranet's way): a claim's `NetworkConfig` ([`config`]) moves the function's
//! netdev into the pod's network namespace through rtnetlink ([`netlink`]) and back on sandbox stop.
//!
//! CNI mode ([`cni`], the SR-IOV DRA driver's way): a claim's `VfConfig.netAttachDefName` names a
//! NetworkAttachmentDefinition whose CNI plugins attach the function (exec of the plugins from
//! `--cni-bin-dir`, results cached for DEL). The functions of a pod come from the prepared claims
//! ([`pods`]); what the pod's interface got goes into the claim's `networkData` ([`status`]). The NRI
//! plugin drives both at pod sandbox events (`crate::nri::sandbox`).

pub mod cni;
pub mod config;
pub mod filter;
pub mod pods;
pub mod status;

pub use dra_podnet::{direct, error, hostnet, moved, netlink, rdma};

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use backends::sysfs::tree::Tree;
use filter::{DeviceFilter, FilterError};
use hostnet::{MAX_FILE_BYTES, NetworkFiles, NodeNetwork, Reason};

use crate::inventory::Inventory;
use crate::slices::SliceConfig;
use crate::slices::devices::{DeviceSource, devices_with_sources};

/// Flags of the node-network guard.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeNetArgs {
    /// Interface names or globs (`eth*`, `ens1f?`) never published, rebound or moved (comma-separated),
    /// besides the node's own network (default-route and InternalIP interfaces and their members),
    /// which is always withheld.
    #[arg(
        long,
        env = "EXCLUDE_INTERFACES",
        value_delimiter = ',',
        value_name = "GLOBS"
    )]
    pub exclude_interfaces: Vec<String>,

    /// A CEL expression over a network device's published attributes, as in a DRA selector
    /// (`device.attributes["<driver>"].ifName.startsWith("ens")`); network devices it does not
    /// select, or on which it fails, are not published (as dranet's --filter).
    #[arg(long, env = "DEVICE_FILTER", value_name = "CEL")]
    pub device_filter: Option<String>,
}

/// The node's network files read through the sysfs backend's [`Tree`]: inside the root, at most
/// [`MAX_FILE_BYTES`] each, never blocking on a FIFO nor opening a device node of a captured tree.
/// A file that is there but cannot be read is logged.
pub struct TreeFiles(pub Tree);

impl NetworkFiles for TreeFiles {
    fn read(&self, relative: &Path) -> Result<Option<String>, String> {
        let path = self.0.join(relative);
        let mut bytes = Vec::new();
        let read = self.0.open_regular(&path).and_then(|file| {
            let mut limited = file.take(MAX_FILE_BYTES + 1);
            limited
                .read_to_end(&mut bytes)
                .map_err(|source| hal::Error::Io {
                    op: "read",
                    path: path.clone(),
                    source,
                })
        });
        match read {
            Ok(_) if bytes.len() as u64 > MAX_FILE_BYTES => {
                // Whole lines of the first part (the kernel lists the IPv4 default route first).
                bytes.truncate(MAX_FILE_BYTES as usize);
                let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                bytes.truncate(end);
                tracing::warn!(path = %path.display(), "longer than {MAX_FILE_BYTES} bytes: the rest not read");
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Ok(_) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(error) if error.kind() == hal::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The kernel's addresses when the root is this node's `/` (the plugin runs in the host's
    /// network namespace, as `proc/net` is read there); none for a captured tree.
    fn addresses(&self) -> Option<Vec<(String, IpAddr)>> {
        if self.0.root() != Path::new("/") {
            return None;
        }
        match dra_podnet::hostnet::kernel_addresses() {
            Ok(addresses) => Some(addresses),
            Err(error) => {
                tracing::warn!(%error, "the node's addresses: not listed (routes are used)");
                None
            }
        }
    }

    fn list(&self, relative: &Path) -> Result<Vec<String>, String> {
        let names = self.0.list_if_there(&self.0.join(relative));
        names
            .map(|names| names.into_iter().flatten().collect())
            .map_err(|error| error.to_string())
    }
}

/// Withholds the node's own network and filtered devices from each inventory read.
pub struct NodeGuard {
    root: PathBuf,
    /// The Node's InternalIPs withheld: those of the last two reads ([`NodeGuard::set_internal_ips`]),
    /// and the last read alone; `None` until read once (every netdev is withheld meanwhile).
    internal_ips: Mutex<Option<(Vec<IpAddr>, Vec<IpAddr>)>>,
    args: NodeNetArgs,
    last: Mutex<BTreeMap<String, String>>,
}

impl NodeGuard {
    /// A guard reading the node's network under `root`, the Node's InternalIPs `internal_ips`
    /// (`None`: not read yet, so which interface carries them is not known and every netdev is
    /// withheld until [`NodeGuard::set_internal_ips`]); fails when `--device-filter` is not CEL.
    pub fn new(
        root: impl Into<PathBuf>,
        internal_ips: Option<Vec<IpAddr>>,
        args: NodeNetArgs,
    ) -> Result<NodeGuard, FilterError> {
        if let Some(expression) = &args.device_filter {
            DeviceFilter::new(expression)?;
        }
        Ok(NodeGuard {
            root: root.into(),
            internal_ips: Mutex::new(internal_ips.map(|ips| (ips.clone(), ips))),
            args,
            last: Mutex::new(BTreeMap::new()),
        })
    }

    /// The Node's InternalIPs, read again (they may change, or may not have been read at start): the
    /// next [`NodeGuard::apply`] withholds the interfaces that carry them, and those of the read
    /// before: an address is let go only when two reads in a row lack it (a Node whose addresses
    /// are being rewritten, by a cloud controller or a new `--node-ip`, may show none for a moment).
    /// True when what is withheld changed (the first read always does).
    pub fn set_internal_ips(&self, ips: Vec<IpAddr>) -> bool {
        let mut known = self
            .internal_ips
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some((withheld, last)) = &mut *known else {
            tracing::info!(now = ?ips, "the Node's InternalIPs read");
            *known = Some((ips.clone(), ips));
            return true;
        };
        let mut now = ips.clone();
        for ip in last.iter() {
            if !now.contains(ip) {
                now.push(*ip);
            }
        }
        *last = ips;
        if *withheld == now {
            return false;
        }
        tracing::info!(was = ?*withheld, now = ?now, "the Node's InternalIPs withheld changed");
        *withheld = now;
        true
    }

    /// Removes from `inventory` the functions to withhold; returns them (PCI address → why), and logs
    /// the list whenever it changes.
    pub fn apply(
        &self,
        inventory: &mut Inventory,
        config: &SliceConfig,
    ) -> BTreeMap<String, String> {
        let files = TreeFiles(Tree::open(&backends::SysfsRoot::new(&self.root)));
        let internal_ips = self
            .internal_ips
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(withheld, _)| withheld.clone());
        let mut node = NodeNetwork::read(&files, internal_ips.as_deref().unwrap_or_default());
        if internal_ips.is_none() {
            node.unread
                .push("the Node's InternalIPs (not read from the API server yet)".to_owned());
        }
        // The filter holds non-Send CEL state: compiled for each read (it is small).
        let filter = self
            .args
            .device_filter
            .as_deref()
            .and_then(|e| DeviceFilter::new(e).ok());
        let withheld = withhold(
            inventory,
            config,
            &node,
            &self.args.exclude_interfaces,
            filter.as_ref(),
        );
        if let Ok(mut last) = self.last.lock()
            && *last != withheld
        {
            for (address, why) in &withheld {
                tracing::info!(%address, why = %why, "network function withheld: not published, rebound or moved");
            }
            *last = withheld.clone();
        }
        withheld
    }
}

/// The node's InternalIP addresses from its Node object; `None` when it cannot be read in 10 s
/// (logged at `warn` when `loud`, else at `debug`).
pub async fn internal_ips(client: &kube::Client, node: &str, loud: bool) -> Option<Vec<IpAddr>> {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let error = match tokio::time::timeout(std::time::Duration::from_secs(10), api.get(node)).await
    {
        Ok(Ok(node)) => {
            return Some(
                node.status
                    .and_then(|s| s.addresses)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .filter_map(|a| a.address.parse().ok())
                    .collect(),
            );
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in 10 s".to_owned(),
    };
    match loud {
        true => tracing::warn!(%error, node, "the Node's InternalIP could not be read"),
        false => tracing::debug!(%error, node, "the Node's InternalIP could not be read"),
    }
    None
}

/// Reads the Node's InternalIPs into `guard` for as long as the plugin runs: every `period`, and
/// every `retry` while they could not be read (an API server slow at start left every netdev
/// withheld). A read that changes what is withheld notifies `changed` (the plugin reads its
/// inventory and publishes again then, not at the next rescan). A failed read keeps what was read
/// before; the first of a run of failures is logged as a warning. Never ends.
pub async fn keep_internal_ips(
    guard: &NodeGuard,
    client: &kube::Client,
    node: &str,
    retry: std::time::Duration,
    period: std::time::Duration,
    changed: &tokio::sync::Notify,
) {
    let mut failing = false;
    loop {
        let wait = match internal_ips(client, node, !failing).await {
            Some(ips) => {
                failing = false;
                if guard.set_internal_ips(ips) {
                    changed.notify_one();
                }
                period
            }
            None => {
                failing = true;
                retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Moves from `inventory.pci` to `inventory.withheld` the functions with a netdev of the node's network
/// or matching `globs`, and the network functions `filter` does not select. Returns PCI address → why.
pub fn withhold(
    inventory: &mut Inventory,
    config: &SliceConfig,
    node: &NodeNetwork,
    globs: &[String],
    filter: Option<&DeviceFilter>,
) -> BTreeMap<String, String> {
    let mut withheld: BTreeMap<String, String> = BTreeMap::new();
    for function in &inventory.pci {
        for netdev in &function.netdevs {
            if let Some(reason) = node.protects(netdev, globs) {
                let why = match reason {
                    Reason::Excluded(_) => format!("{netdev} {reason}"),
                    _ => format!("{netdev} {reason} (the node's own network)"),
                };
                withheld.entry(function.address.to_string()).or_insert(why);
            }
        }
    }
    if let Some(filter) = filter {
        let mut nics_only = config.clone();
        nics_only.families.gpus = false;
        nics_only.families.cpus = false;
        nics_only.families.nics = true;
        for (device, source) in devices_with_sources(inventory, &nics_only) {
            let DeviceSource::Nic { function, .. } = source else {
                continue;
            };
            let why = match filter.selects(&device, &config.driver_name) {
                Ok(true) => continue,
                Ok(false) => format!("{} not selected by --device-filter", device.name),
                Err(e) => e.to_string(),
            };
            withheld.entry(function.address.to_string()).or_insert(why);
        }
    }
    let (kept, removed) = std::mem::take(&mut inventory.pci)
        .into_iter()
        .partition(|f| !withheld.contains_key(&f.address.to_string()));
    inventory.pci = kept;
    inventory.withheld = removed;
    withheld
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
