//! Rebuilding the records of prepared claims from their CDI specs when the checkpoint file was
//! unusable (corrupt, oversized, a directory): the specs are the claims' own, never deleted as
//! orphans then, and what they cannot tell is reported.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::ResourceClaim;

use super::PreparerConfig;
use super::plan::reserved_pods;
use crate::plugin::api::{ClaimRef, PreparedDevice};
use crate::plugin::cdi::{CdiError, Spec, qualified_device};
use crate::plugin::checkpoint::{ClaimRecord, Phase, SpecJson};
use crate::plugin::claims::allocated_devices;

/// The env variable naming the claim (`namespace/name`) in every spec the plugin writes.
pub(super) const CLAIM_ENV: &str = "DRA_HAL_CLAIM";

/// The undo entry of a record rebuilt from a spec whose prepare bound a function to vfio-pci: the
/// driver before is lost, but a reboot undid the binding, so the record must not outlive one.
pub(super) const REBUILT_UNDO_KEY: &str = "rebuilt";

/// What [`from_cdi_specs`] rebuilt.
#[derive(Default)]
pub(super) struct Rebuilt {
    /// A record for each readable spec, by claim UID.
    pub claims: BTreeMap<String, ClaimRecord>,
    /// Wanted specs whose read failed on an error a later start may not meet (`may_read_later`):
    /// the rebuild is not over.
    pub unreadable: usize,
}

/// A record for each readable spec of `kind` whose claim is `wanted`, marked `recovered`; specs that
/// cannot be read are left on disk and reported; those that failed on an I/O error are counted.
pub(super) fn from_cdi_specs(
    config: &PreparerConfig,
    kind: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Rebuilt {
    let mut claims = BTreeMap::new();
    let mut unreadable = 0;
    // A listing that failed on a transient error hides specs a later start finds: as unreadable.
    let listed = config.cdi.try_list_claim_specs(kind).unwrap_or_else(|error| {
        if let CdiError::Io { source, .. } = &error
            && may_read_later(source)
        {
            unreadable += 1;
        }
        tracing::warn!(%error, "the CDI specs could not be listed; no claim is rebuilt from them");
        Vec::new()
    });
    for uid in listed {
        if !wanted(&uid) {
            continue;
        }
        let spec = match config.cdi.read_claim_spec(kind, &uid) {
            Ok(spec) => spec,
            Err(error) => {
                // A read that may succeed later (a disk error, no memory or file descriptors
                // left). Not a spec removed since the listing, nor invalid JSON, nor a link in its
                // place: reading those again would not help.
                if let CdiError::Io { source, .. } = &error
                    && may_read_later(source)
                {
                    unreadable += 1;
                }
                tracing::warn!(claim = %uid, %error, "a CDI spec could not be read; it is kept, its claim is not rebuilt");
                continue;
            }
        };
        let (record, lost) = record_from_spec(config, kind, &uid, &spec);
        tracing::warn!(
            claim = %uid,
            devices = record.devices.len(),
            not_recovered = %lost.join("; "),
            "claim rebuilt from its CDI spec"
        );
        claims.insert(uid, record);
    }
    Rebuilt { claims, unreadable }
}

/// Whether a failed read of a spec is one a later start may not meet: `EIO`, `ENOMEM`, `EMFILE`,
/// `ENFILE`, `EAGAIN`, `EINTR`, `ENOBUFS`.
fn may_read_later(error: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let transient = [
        Errno::IO,
        Errno::NOMEM,
        Errno::MFILE,
        Errno::NFILE,
        Errno::AGAIN,
        Errno::INTR,
        Errno::NOBUFS,
    ];
    error
        .raw_os_error()
        .is_some_and(|code| transient.iter().any(|e| e.raw_os_error() == code))
}

/// The record a spec tells, and what it cannot tell.
pub(super) fn record_from_spec(
    config: &PreparerConfig,
    kind: &str,
    uid: &str,
    spec: &Spec,
) -> (ClaimRecord, Vec<String>) {
    let mut lost = Vec::new();
    let env: Vec<&str> = spec
        .container_edits
        .iter()
        .chain(spec.devices.iter().map(|d| &d.container_edits))
        .flat_map(|e| e.env.iter().map(String::as_str))
        .collect();
    let var = |name: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
    };
    let named = var(CLAIM_ENV)
        .and_then(|v| v.split_once('/'))
        .map(|(namespace, name)| ClaimRef {
            namespace: namespace.to_owned(),
            uid: uid.to_owned(),
            name: name.to_owned(),
        })
        .filter(|c| crate::plugin::claims::check_claim_ref(c).is_ok());
    let (namespace, name) = match named {
        Some(c) => (c.namespace, c.name),
        None => {
            lost.push(format!(
                "the claim's name ({CLAIM_ENV} missing): kept until the kubelet unprepares it"
            ));
            (String::new(), String::new())
        }
    };
    let prefix = format!("{uid}-");
    let devices: Vec<PreparedDevice> = spec
        .devices
        .iter()
        .filter_map(|d| {
            Some(PreparedDevice {
                request_names: Vec::new(),
                pool_name: config.slices.node_name.clone(),
                // The mount-only device of a request's metadata file is not an allocated device.
                device_name: d
                    .name
                    .strip_prefix(&prefix)
                    .filter(|n| !n.starts_with(super::metadata::CDI_PREFIX))
                    .map(super::plan::device_of_key)?
                    .to_owned(),
                cdi_device_ids: vec![qualified_device(kind, &d.name)],
                share_id: None,
            })
        })
        .collect();
    // What the prepare changed, which a reboot undoes: the record says so, and a reboot forgets it
    // (see `undone_by_reboot`). A function bound to vfio-pci gets a mark; a GPU partition's VFs get
    // the entry by which the claim holds them (a whole-GPU prepare of another claim must not remove
    // them; the last claim unprepared removes them).
    let mut undo = metadata_undo(spec, &prefix);
    for d in &spec.devices {
        let vfio = d
            .container_edits
            .device_nodes
            .iter()
            .any(|n| n.path.starts_with("/dev/vfio/"));
        let partition = d
            .name
            .strip_prefix(&prefix)
            .and_then(crate::slices::partitions::partition_gpu);
        if let Some(pf) = partition {
            let held = serde_json::json!({"pf": pf.to_string(), "rebuilt": true});
            undo.insert(crate::plugin::partitions::undo_key(pf), held);
        }
        if vfio {
            let why = "rebuilt from its CDI spec: it bound a function to vfio-pci";
            undo.insert(REBUILT_UNDO_KEY.to_owned(), serde_json::json!(why));
            lost.push(format!(
                "the driver {} was bound to before vfio-pci (it stays on vfio-pci)",
                d.name.strip_prefix(&prefix).unwrap_or(&d.name)
            ));
        }
    }
    let mut cpus = BTreeMap::new();
    if let Some(set) = var("DRA_HAL_CPUSET").and_then(|v| hal::CpuSet::from_cpulist(v).ok()) {
        cpus.insert("recovered".to_owned(), set);
        lost.push("the pods its CPUs are pinned for (NRI)".to_owned());
    }
    if var("DRA_RT_TASK_CPUS").is_some() {
        lost.push("its real-time task placement".to_owned());
    }
    let record = ClaimRecord {
        claim: ClaimRef {
            namespace,
            uid: uid.to_owned(),
            name,
        },
        phase: Phase::Completed,
        boot_id: config.boot_id.clone(),
        devices,
        cdi_spec: SpecJson::of(spec).unwrap_or_else(|_| serde_json::Value::Null.into()),
        undo,
        cpus,
        rt: BTreeMap::new(),
        network: BTreeMap::new(),
        pods: Vec::new(),
        admin: Vec::new(),
        recovered: true,
    };
    (record, lost)
}

/// A rebuilt record completed with what the ResourceClaim says (each device's request and share id,
/// the pods it is reserved for), when the claim allocates exactly the devices of the spec; `None`
/// otherwise (the claim is then redone).
pub(super) fn complete(
    mut record: ClaimRecord,
    reference: &ClaimRef,
    claim: Option<ResourceClaim>,
    config: &PreparerConfig,
) -> Option<ClaimRecord> {
    let claim = claim?;
    record.claim = reference.clone();
    let allocated = allocated_devices(
        &record.claim,
        &claim,
        &config.slices.driver_name,
        &config.slices.node_name,
    )
    .ok()?;
    let mut names: Vec<&str> = allocated.iter().map(|a| a.device.as_str()).collect();
    let mut ours: Vec<&str> = record
        .devices
        .iter()
        .map(|d| d.device_name.as_str())
        .collect();
    names.sort_unstable();
    ours.sort_unstable();
    if names != ours {
        return None;
    }
    // The metadata mount devices of the spec (`--device-metadata`), by request.
    let spec: Option<crate::plugin::cdi::Spec> = record.cdi_spec.parse().ok();
    let mount_device = |request: &str| {
        let base = dra_kubelet_plugin::metadata::base_request(request);
        let name = format!("{}-{}{base}", reference.uid, super::metadata::CDI_PREFIX);
        let kind = format!("{}/device", config.slices.driver_name);
        spec.as_ref()?
            .devices
            .iter()
            .any(|d| d.name == name)
            .then(|| qualified_device(&kind, &name))
    };
    // The n-th device of a name is the n-th result on it (two requests may share a device).
    let mut unpaired: Vec<Option<&_>> = allocated.iter().map(Some).collect();
    for device in &mut record.devices {
        let a = unpaired
            .iter_mut()
            .find(|a| a.is_some_and(|a| a.device == device.device_name))?
            .take()?;
        device.request_names = vec![a.request.clone()];
        device.share_id = a.share_id.clone();
        device.cdi_device_ids.extend(mount_device(&a.request));
    }
    record.pods = reserved_pods(&claim);
    // What the spec cannot tell: which devices it holds with admin access only.
    record.admin = super::plan::admin_only(&allocated);
    // The direct-mode configs of its network functions (`nic-*`, `rdma-*` devices), as the first
    // prepare checked them.
    record.network = super::network::named_configs(
        allocated
            .iter()
            .filter(|a| a.device.starts_with("nic-") || a.device.starts_with("rdma-")),
    );
    record.recovered = false;
    Some(record)
}

/// The undo entry of device metadata files when the spec mounts some (see
/// [`super::metadata::UNDO_KEY`]): a rebuilt claim is prepared afresh after a reboot too.
fn metadata_undo(spec: &Spec, prefix: &str) -> BTreeMap<String, serde_json::Value> {
    let has_metadata = spec.devices.iter().any(|d| {
        d.name
            .strip_prefix(prefix)
            .is_some_and(|n| n.starts_with(super::metadata::CDI_PREFIX))
    });
    has_metadata
        .then(super::metadata::undo_entry)
        .into_iter()
        .collect()
}
