//! The plan of a prepare, decided under the claim-state lock without I/O: the devices' machine side,
//! exclusivity, CPUs and real-time tasks, driver rebinds, the CDI spec and the `Started` record. The
//! record goes into memory at once, as the reservation of its devices and CPUs, before the lock is
//! released; [`super::apply`] then writes it and makes the changes, and commits or gives it back.

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, ResourceClaim};

use super::edits::{claim_env, container_edits};
use super::network::{direct_configs, network_status};
use super::{PrepareError, Preparer, Rebind, recover};
use crate::inventory::Inventory;
use crate::plugin::api::{ClaimRef, PreparedDevice};
use crate::plugin::cdi::{Device as CdiDevice, Spec, qualified_device};
use crate::plugin::checkpoint::{ClaimRecord, Phase, SpecJson};
use crate::plugin::claims::Allocated;
use crate::plugin::cpus::{Placement, allocate};
use crate::slices::devices::{DeviceSource, devices_with_sources};

/// The allocated devices as this node publishes them, in the order of the allocation.
pub(super) struct Resolved {
    /// The machine side of each.
    pub sources: Vec<DeviceSource>,
    /// Whether each is published with `allowMultipleAllocations`.
    pub shareable: Vec<bool>,
    /// The published attributes of each, by device name (for `--device-metadata`).
    pub attributes: BTreeMap<String, BTreeMap<String, DeviceAttribute>>,
}

/// What a prepare will do, reserved in memory.
pub(super) struct Planned {
    /// The `Started` record (in memory already).
    pub record: ClaimRecord,
    /// Driver changes, in order.
    pub rebinds: Vec<Rebind>,
    /// The claim's CDI spec.
    pub spec: Spec,
    /// The answer to the kubelet.
    pub devices: Vec<PreparedDevice>,
    /// `status.devices` entries for the claim's network functions.
    pub statuses: Vec<serde_json::Value>,
    /// The device metadata files (`--device-metadata`).
    pub metadata: Option<super::metadata::MetadataPlan>,
}

impl Preparer {
    /// Plans the prepare of `claim` and reserves it: under the state lock, exclusivity is checked
    /// against every record (completed, or reserved by a prepare in flight) and the `Started` record
    /// is inserted. GPU partitions a claim needs are created here (sysfs writes of a rare claim kind);
    /// nothing else is written.
    pub(super) fn reserve(
        &self,
        claim: &ClaimRef,
        allocated: &[Allocated],
        resource_claim: &ResourceClaim,
    ) -> Result<Planned, PrepareError> {
        // The devices this node publishes are built once, before the claim-state lock is taken.
        let Resolved {
            mut sources,
            shareable,
            attributes,
        } = self.resolve(allocated)?;
        refuse_admin_takes(allocated)?;
        refuse_unattached(allocated, self.config.pod_networking)?;
        refuse_repeats(allocated, &shareable)?;
        let mut state = self.state();
        self.check_exclusive(&state, &claim.uid, allocated, &shareable)?;
        let partitioned = {
            let inventory = self
                .inventory
                .read()
                .map_err(|_| PrepareError::poisoned("inventory"))?;
            inventory
                .gpus
                .iter()
                .filter(|g| {
                    crate::slices::partitions::partition_count(g, &inventory, &self.config.slices)
                        .is_some()
                })
                .map(|g| g.pci_address)
                .collect()
        };
        let partition_undo = crate::plugin::partitions::prepare(
            self.config.binder.as_ref(),
            self.config.gpus.as_ref(),
            &state,
            &claim.uid,
            &mut sources,
            &partitioned,
        )?;
        let planned = (|| {
            let rebinds = {
                let inventory = self
                    .inventory
                    .read()
                    .map_err(|_| PrepareError::poisoned("inventory"))?;
                check_vfio_groups(allocated, &sources, &inventory, &state, &claim.uid)?;
                rebinds(allocated, &sources, &inventory)?
            };
            let keys = result_keys(allocated);
            let cpus = self.place_cpus(&state, &claim.uid, allocated, &sources, &keys)?;
            let rt = self.place_rt(&state, &claim.uid, allocated, &sources, &keys, &cpus)?;
            let (mut spec, mut devices) =
                self.plan(claim, allocated, &sources, &keys, &cpus, &rt)?;
            let metadata = self.plan_metadata(
                claim,
                resource_claim,
                allocated,
                &attributes,
                &mut spec,
                &mut devices,
            )?;
            let mut record = ClaimRecord {
                claim: claim.clone(),
                // Checked for size as it is stored last (`completed` is longer than `started`).
                phase: Phase::Completed,
                boot_id: self.config.boot_id.clone(),
                devices: devices.clone(),
                cdi_spec: SpecJson::of(&spec).map_err(PrepareError::SpecJson)?,
                undo: rebinds
                    .iter()
                    .filter_map(|r| Some((r.function.to_string(), serde_json::to_value(r).ok()?)))
                    .chain(partition_undo.clone())
                    .chain(metadata.as_ref().map(|_| super::metadata::undo_entry()))
                    .collect(),
                cpus,
                rt,
                pods: reserved_pods(resource_claim),
                network: direct_configs(allocated, &sources)?,
                admin: admin_only(allocated),
                recovered: false,
            };
            self.config.checkpoint.check_claim(&record)?;
            record.phase = Phase::Started;
            let statuses = network_status(&self.config.slices, allocated, &sources);
            Ok::<_, PrepareError>(Planned {
                record,
                rebinds,
                spec,
                devices,
                statuses,
                metadata,
            })
        })();
        match planned {
            Ok(planned) => {
                state.insert(claim.uid.clone(), planned.record.clone());
                self.publish_cpus(&state);
                Ok(planned)
            }
            Err(error) => {
                // VFs made for partitions above go again when no claim holds them.
                let keys = partition_undo.keys().cloned().collect::<Vec<_>>();
                for e in crate::plugin::partitions::release_keys(
                    self.config.binder.as_ref(),
                    &state,
                    &claim.uid,
                    &keys,
                ) {
                    tracing::warn!(claim = %claim.uid, error = %e, "GPU partitions not released");
                }
                Err(error)
            }
        }
    }

    /// The machine side of each allocated device, whether each is published with
    /// `allowMultipleAllocations`, and its published attributes; a device this node does not publish
    /// is an error. The published devices are built once here, for the whole prepare.
    pub(super) fn resolve(&self, allocated: &[Allocated]) -> Result<Resolved, PrepareError> {
        let inventory = self
            .inventory
            .read()
            .map_err(|_| PrepareError::poisoned("inventory"))?;
        let mut published: BTreeMap<String, (Device, DeviceSource)> =
            devices_with_sources(&inventory, &self.config.slices)
                .into_iter()
                .map(|(d, s)| (d.name.clone(), (d, s)))
                .collect();
        let mut resolved = Resolved {
            sources: Vec::with_capacity(allocated.len()),
            shareable: Vec::with_capacity(allocated.len()),
            attributes: BTreeMap::new(),
        };
        for a in allocated {
            let Some((device, source)) = published.get(&a.device) else {
                return Err(PrepareError::NotPublished {
                    device: a.device.clone(),
                });
            };
            if let Some(unhealthy) =
                crate::health::of_source(&inventory, source, &self.config.slices)
                && unhealthy.refuses_prepare()
            {
                return Err(PrepareError::Unhealthy {
                    device: a.device.clone(),
                    message: unhealthy.message.to_string(),
                    reason: unhealthy.reason.to_string(),
                });
            }
            resolved.sources.push(source.clone());
            resolved
                .shareable
                .push(device.allow_multiple_allocations == Some(true));
        }
        // A device allocated twice (two requests) keeps its attributes for both.
        for a in allocated {
            if let Some((device, _)) = published.remove(&a.device) {
                resolved
                    .attributes
                    .insert(a.device.clone(), device.attributes.unwrap_or_default());
            }
        }
        Ok(resolved)
    }

    /// The CPUs of each CPU device of the claim, by result key: an individual CPU is itself; a group
    /// gives the CPUs the claim's `CpuConfig` names (checked: in the group, free, as many as
    /// consumed) or those the topology-aware policy picks, never one another claim or another
    /// request of this one holds.
    fn place_cpus(
        &self,
        state: &BTreeMap<String, ClaimRecord>,
        uid: &str,
        allocated: &[Allocated],
        sources: &[DeviceSource],
        keys: &[String],
    ) -> Result<BTreeMap<String, hal::CpuSet>, PrepareError> {
        // Other claims' exclusive CPUs, and the CPUs their real-time tasks run on.
        let mut taken: hal::CpuSet = state
            .iter()
            .filter(|(other, _)| other.as_str() != uid)
            .flat_map(|(_, r)| {
                r.cpus
                    .values()
                    .flat_map(hal::CpuSet::iter)
                    .chain(r.rt.values().flatten().map(|t| t.cpu))
                    .collect::<Vec<_>>()
            })
            .collect();
        let inventory = self
            .inventory
            .read()
            .map_err(|_| PrepareError::poisoned("inventory"))?;
        let mut placed = BTreeMap::new();
        for ((a, source), key) in allocated.iter().zip(sources).zip(keys) {
            let cpus = match source {
                DeviceSource::Cpu(id) => hal::CpuSet::from_iter([*id]),
                DeviceSource::CpuGroup(group) => {
                    let want = a.consumed_cpus.unwrap_or(group.len());
                    match &a.cpu {
                        Some(config) => {
                            let asked = &config.cpuset;
                            if !asked.is_subset(group) {
                                return Err(PrepareError::InvalidConfig(format!(
                                    "{}: CpuConfig cpuset {asked} is not within the group's allocatable CPUs {group} (offline or reserved CPUs are not)",
                                    a.device
                                )));
                            }
                            let busy = asked.intersection(&taken);
                            if !busy.is_empty() {
                                return Err(PrepareError::Held(format!(
                                    "{}: CPUs {busy} are held by another claim or another request of this one",
                                    a.device
                                )));
                            }
                            if asked.len() != want {
                                return Err(PrepareError::InvalidConfig(format!(
                                    "{}: CpuConfig cpuset {asked} has {} CPUs, the claim consumes {want}",
                                    a.device,
                                    asked.len()
                                )));
                            }
                            asked.clone()
                        }
                        None => {
                            let topology = inventory.cpu.as_ref().ok_or_else(|| {
                                PrepareError::Machine("the CPU topology could not be read".into())
                            })?;
                            allocate(topology, group, &taken, want, Placement::Packed).map_err(
                                |source| PrepareError::Cpus {
                                    device: a.device.clone(),
                                    source,
                                },
                            )?
                        }
                    }
                }
                _ => continue,
            };
            taken = taken.union(&cpus);
            placed.insert(key.clone(), cpus);
        }
        Ok(placed)
    }

    /// The real-time tasks of each `rt-<group>` device of the claim: placed worst-fit on the group's
    /// CPUs that no claim holds exclusively (this one included), with the other claims' tasks counted.
    fn place_rt(
        &self,
        state: &BTreeMap<String, ClaimRecord>,
        uid: &str,
        allocated: &[Allocated],
        sources: &[DeviceSource],
        keys: &[String],
        own: &BTreeMap<String, hal::CpuSet>,
    ) -> Result<BTreeMap<String, Vec<crate::plugin::rt::RtTask>>, PrepareError> {
        let others = state.iter().filter(|(other, _)| other.as_str() != uid);
        let exclusive: hal::CpuSet = others
            .clone()
            .flat_map(|(_, r)| {
                r.cpus
                    .values()
                    .flat_map(hal::CpuSet::iter)
                    .collect::<Vec<_>>()
            })
            .chain(own.values().flat_map(hal::CpuSet::iter))
            .collect();
        let mut placed_tasks: Vec<crate::plugin::rt::RtTask> = others
            .flat_map(|(_, r)| r.rt.values().flatten().copied())
            .collect();
        let mut placed = BTreeMap::new();
        for ((a, source), key) in allocated.iter().zip(sources).zip(keys) {
            let DeviceSource::RtGroup { cpus, per_cpu } = source else {
                continue;
            };
            let config = a.rt.as_ref().ok_or_else(|| {
                PrepareError::InvalidConfig(format!(
                    "{}: an RT bandwidth device needs an RtConfig (runtimeUs, periodUs, tasks)",
                    a.device
                ))
            })?;
            let free: hal::CpuSet = cpus.iter().filter(|c| !exclusive.contains(*c)).collect();
            let tasks = crate::plugin::rt::place(
                config,
                &free,
                &placed_tasks,
                *per_cpu,
                a.consumed_rt,
                &a.device,
            )?;
            placed_tasks.extend(tasks.iter().copied());
            placed.insert(key.clone(), tasks);
        }
        Ok(placed)
    }

    /// A device given exclusively must not be in another claim (the scheduler ensures it; a stale
    /// checkpoint or a race with a re-created claim must not break it), except where that claim
    /// holds it with admin access only: admin access shares a device in use, in either order.
    fn check_exclusive(
        &self,
        state: &BTreeMap<String, ClaimRecord>,
        uid: &str,
        allocated: &[Allocated],
        shareable: &[bool],
    ) -> Result<(), PrepareError> {
        // Devices published with `allowMultipleAllocations` (CPU groups, RT bandwidth) are shared by
        // design; CPUs and tasks are checked one by one. A `shareID` on any other device (a GPU, a
        // VF) gives it no second owner.
        let exclusive = allocated
            .iter()
            .zip(shareable)
            .filter(|(a, shareable)| !**shareable && !a.admin_access)
            .map(|(a, _)| a);
        for a in exclusive {
            for (other, record) in state.iter().filter(|(other, _)| other.as_str() != uid) {
                let held = |d: &PreparedDevice| {
                    d.device_name == a.device && !record.admin.contains(&d.device_name)
                };
                if record.devices.iter().any(held) {
                    return Err(PrepareError::Held(format!(
                        "device {} is already prepared for claim {other}",
                        a.device
                    )));
                }
            }
        }
        Ok(())
    }

    /// The claim's CDI spec and the answer to the kubelet.
    fn plan(
        &self,
        claim: &ClaimRef,
        allocated: &[Allocated],
        sources: &[DeviceSource],
        keys: &[String],
        cpus: &BTreeMap<String, hal::CpuSet>,
        rt: &BTreeMap<String, Vec<crate::plugin::rt::RtTask>>,
    ) -> Result<(Spec, Vec<PreparedDevice>), PrepareError> {
        let mut cdi_devices = Vec::new();
        let mut prepared = Vec::new();
        let mut claim_env = claim_env(allocated, sources);
        let tasks: Vec<crate::plugin::rt::RtTask> = rt.values().flatten().copied().collect();
        claim_env.extend(crate::plugin::rt::env(&tasks));
        // Names the claim in its spec, so a lost checkpoint can be rebuilt from the specs.
        claim_env.push(format!(
            "{}={}/{}",
            recover::CLAIM_ENV,
            claim.namespace,
            claim.name
        ));
        let all_cpus: hal::CpuSet = cpus.values().flat_map(hal::CpuSet::iter).collect();
        if !all_cpus.is_empty() {
            claim_env.push(format!(
                "DRA_CPUSET_{}={}",
                claim.uid,
                all_cpus.to_cpulist()
            ));
            claim_env.push(format!("DRA_HAL_CPUSET={}", all_cpus.to_cpulist()));
        }
        // A config env that applies to every device of the claim is written once, in the spec's own
        // edits (applied whenever any of its devices is), not once per device.
        let shared_config = match allocated {
            [first, rest @ ..]
                if !rest.is_empty()
                    && !first.config.env.is_empty()
                    && rest.iter().all(|a| a.config.env == first.config.env) =>
            {
                Some(&first.config.env)
            }
            _ => None,
        };
        for ((a, source), key) in allocated.iter().zip(sources).zip(keys) {
            let name = format!("{}-{key}", claim.uid);
            let vfio = a.driver() == Some("vfio-pci");
            let vfio_group = match source {
                _ if !vfio => None,
                DeviceSource::Nic { function, .. } => Some(function.iommu_group),
                DeviceSource::Gpu(gpu) => Some(
                    self.inventory
                        .read()
                        .ok()
                        .and_then(|i| i.function(gpu.pci_address).and_then(|f| f.iommu_group)),
                ),
                _ => None,
            };
            let mut edits = container_edits(source, vfio_group);
            if let Some(root) = &self.config.dev_root {
                for node in &mut edits.device_nodes {
                    let host = root.join(node.path.trim_start_matches('/'));
                    node.host_path = Some(host.to_string_lossy().into_owned());
                }
            }
            edits.env.extend(claim_env.iter().cloned());
            if shared_config.is_none() {
                edits
                    .env
                    .extend(a.config.env.iter().map(|(k, v)| format!("{k}={v}")));
            }
            cdi_devices.push(CdiDevice {
                name: name.clone(),
                annotations: None,
                container_edits: edits,
            });
            prepared.push(PreparedDevice {
                request_names: vec![a.request.clone()],
                pool_name: self.config.slices.node_name.clone(),
                device_name: a.device.clone(),
                cdi_device_ids: vec![qualified_device(&self.kind, &name)],
                share_id: a.share_id.clone(),
            });
        }
        let mut spec = Spec::new(&self.kind, cdi_devices);
        if let Some(env) = shared_config {
            spec.container_edits = Some(crate::plugin::cdi::ContainerEdits {
                env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                ..Default::default()
            });
        }
        Ok((spec, prepared))
    }
}

/// Each result's key in the claim's CDI device names and its record: the device's name, with `_<n>`
/// for the n-th result (from 2) on the same device, as two requests may share a device published
/// with `allowMultipleAllocations` (a CPU group). A device name, a DNS label, never has a `_`.
fn result_keys(allocated: &[Allocated]) -> Vec<String> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    allocated
        .iter()
        .map(|a| {
            let n = seen.entry(&a.device).or_default();
            *n += 1;
            match *n {
                1 => a.device.clone(),
                n => format!("{}_{n}", a.device),
            }
        })
        .collect()
}

/// The device a result key names (see [`result_keys`]).
pub(super) fn device_of_key(key: &str) -> &str {
    key.split_once('_').map_or(key, |(device, _)| device)
}

/// UIDs of the pods in the claim's `status.reservedFor`.
pub(super) fn reserved_pods(claim: &ResourceClaim) -> Vec<String> {
    claim
        .status
        .iter()
        .flat_map(|s| s.reserved_for.iter().flatten())
        .filter(|r| r.resource == "pods" && r.api_group.as_deref().unwrap_or_default().is_empty())
        .map(|r| r.uid.clone())
        .collect()
}

/// The driver changes the claim's VfConfigs ask for. `vfio-pci` is refused for a PF with VFs enabled
/// (unbinding it would destroy them).
fn rebinds(
    allocated: &[Allocated],
    sources: &[DeviceSource],
    inventory: &Inventory,
) -> Result<Vec<Rebind>, PrepareError> {
    let mut out = Vec::new();
    for (a, source) in allocated.iter().zip(sources) {
        let Some(driver) = a.driver().map(str::to_owned) else {
            continue;
        };
        let (address, current) = match source {
            DeviceSource::Nic { function, .. } if a.vf.is_some() => {
                (function.address, function.driver.clone())
            }
            DeviceSource::Gpu(gpu) if a.gpu.is_some() => (gpu.pci_address, gpu.driver.clone()),
            _ => {
                return Err(PrepareError::InvalidConfig(format!(
                    "{}: a VfConfig applies to network functions, a GpuConfig to GPUs",
                    a.device
                )));
            }
        };
        if current.as_deref() == Some(driver.as_str()) {
            continue;
        }
        if a.admin_access {
            // Admin access shares a device another claim may be using: it must not change it.
            return Err(PrepareError::InvalidConfig(format!(
                "{}: a claim with admin access cannot bind {address} to {driver}; admin access \
                 shares the device with the claim that uses it",
                a.device
            )));
        }
        let vfs = inventory
            .sriov
            .iter()
            .find(|s| s.pf == address)
            .map_or(0, |s| s.num_vfs);
        if vfs > 0 {
            return Err(PrepareError::InvalidConfig(format!(
                "{}: {address} has {vfs} VFs enabled; binding it to {driver} would remove them",
                a.device
            )));
        }
        let original_override =
            super::overrides::before_rebind(inventory, &a.device, address, &driver)?;
        out.push(Rebind {
            function: address,
            driver,
            original: current,
            original_override,
        });
    }
    Ok(out)
}

/// Whether a function on `driver` leaves its IOMMU group usable through VFIO: drivers that leave DMA
/// to their user (`driver_managed_dma`, Linux 5.19 and later): vfio-pci and its variant drivers
/// (`mlx5_vfio_pci`, `nvgrace_gpu_vfio_pci`, `xe-vfio-pci`, ...), pci-stub, PCIe port services.
fn leaves_group_usable(driver: &str) -> bool {
    matches!(driver, "pci-stub" | "pcieport")
        || driver.ends_with("vfio-pci")
        || driver.ends_with("vfio_pci")
}

/// Refuses functions the claim gives to its pod through VFIO (`vfio-pci`) whose IOMMU group the pod
/// could not use: the kernel attaches `/dev/vfio/<group>` to a container only when every function of
/// the group is without a driver or on one that leaves DMA to VFIO ([`leaves_group_usable`]),
/// and a group is held by one open file at a time (`vfio_group_fops_open`: EBUSY), so not by two
/// claims' pods. A GPU's audio function on `snd_hda_intel`, or functions without ACS between them,
/// share a group; withheld functions (the node's own NIC) count too.
fn check_vfio_groups(
    allocated: &[Allocated],
    sources: &[DeviceSource],
    inventory: &Inventory,
    state: &BTreeMap<String, ClaimRecord>,
    uid: &str,
) -> Result<(), PrepareError> {
    let vfio: Vec<(&str, hal::PciAddress)> = allocated
        .iter()
        .zip(sources)
        .filter_map(|(a, source)| {
            let address = match source {
                DeviceSource::Nic { function, .. } => function.address,
                DeviceSource::Gpu(gpu) => gpu.pci_address,
                _ => return None,
            };
            (a.driver() == Some("vfio-pci")).then_some((a.device.as_str(), address))
        })
        .collect();
    let functions = || inventory.pci.iter().chain(&inventory.withheld);
    for (device, address) in &vfio {
        let own = functions().find(|f| f.address == *address);
        let Some(group) = own.and_then(|f| f.iommu_group) else {
            continue;
        };
        // First: a function another claim bound may still be on its old driver in the inventory
        // (until the rescan its binding starts).
        let node = format!("\"/dev/vfio/{group}\"");
        let holder = state
            .iter()
            .find(|(other, r)| other.as_str() != uid && r.cdi_spec.mentions(&node));
        if let Some((other, _)) = holder {
            return Err(PrepareError::Held(format!(
                "{device}: IOMMU group {group} of {address} is already given to claim {other} \
                 (/dev/vfio/{group}); a VFIO group serves one pod at a time"
            )));
        }
        let peer = functions().find(|f| {
            f.iommu_group == Some(group)
                && !vfio.iter().any(|(_, a)| *a == f.address)
                && f.driver.as_deref().is_some_and(|d| !leaves_group_usable(d))
        });
        if let Some(peer) = peer {
            return Err(PrepareError::InvalidConfig(format!(
                "{device}: {address} shares IOMMU group {group} with {} (bound to {}); a pod can \
                 use /dev/vfio/{group} only when every function of the group is on vfio-pci or \
                 has no driver (unbind that function or bind it to vfio-pci on the node, or give \
                 each function a group of its own: ACS)",
                peer.address,
                peer.driver.as_deref().unwrap_or_default(),
            )));
        }
    }
    Ok(())
}

/// The devices `allocated` gives with admin access only (every result naming them has it).
pub(super) fn admin_only(allocated: &[Allocated]) -> Vec<String> {
    let mut admin: Vec<String> = allocated
        .iter()
        .filter(|a| a.admin_access)
        .map(|a| a.device.clone())
        .filter(|device| {
            !allocated
                .iter()
                .any(|a| &a.device == device && !a.admin_access)
        })
        .collect();
    admin.sort();
    admin.dedup();
    admin
}

/// An exclusive device serves one request of a claim, or several that all have admin access (they
/// take nothing from it): the scheduler may still give one to a request and to another with admin
/// access, and the claim's containers would then use a device that a monitoring request only looks
/// at. Only a device published with `allowMultipleAllocations` serves any two requests.
fn refuse_repeats(allocated: &[Allocated], shareable: &[bool]) -> Result<(), PrepareError> {
    let mut first: BTreeMap<&str, &Allocated> = BTreeMap::new();
    for (a, shareable) in allocated.iter().zip(shareable) {
        match first.insert(&a.device, a) {
            Some(earlier) if !(*shareable || earlier.admin_access && a.admin_access) => {
                return Err(PrepareError::InvalidConfig(format!(
                    "device {} is allocated to requests {} and {} of this claim; only a \
                     device published with allowMultipleAllocations (a CPU group, RT bandwidth) \
                     serves two requests, or requests that all have admin access",
                    a.device, earlier.request, a.request
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `a` asks for its function's netdev in its pod (`netAttachDefName`, a `NetworkConfig`).
fn takes_netdev(a: &Allocated) -> bool {
    let nad =
        a.vf.as_ref()
            .is_some_and(|v| v.net_attach_def_name.is_some());
    nad || a.network.is_some()
}

/// Without pod networking (`--pod-networking`, with `--nri`), nothing would attach a function's
/// netdev to the pod: a claim that asks for it is refused, not prepared for a pod whose sandbox would
/// fail (or run without its interface).
fn refuse_unattached(allocated: &[Allocated], pod_networking: bool) -> Result<(), PrepareError> {
    match allocated
        .iter()
        .find(|a| !pod_networking && takes_netdev(a))
    {
        Some(a) => Err(PrepareError::InvalidConfig(format!(
            "{}: the claim asks for the function's netdev in the pod (netAttachDefName or \
             NetworkConfig), but the plugin runs without pod networking (--pod-networking, with \
             --nri), so nothing would attach it",
            a.device
        ))),
        None => Ok(()),
    }
}

/// Admin access shares a device with the claim that uses it: a claim with admin access may not take
/// a network function's netdev into its pod (`netAttachDefName`, a `NetworkConfig`), which would take
/// it from the other claim's pod. (Rebinding is refused in [`rebinds`].)
fn refuse_admin_takes(allocated: &[Allocated]) -> Result<(), PrepareError> {
    for a in allocated.iter().filter(|a| a.admin_access) {
        if takes_netdev(a) {
            return Err(PrepareError::InvalidConfig(format!(
                "{}: a claim with admin access cannot attach the function's netdev to its pod \
                 (netAttachDefName or NetworkConfig); admin access shares the device with the \
                 claim that uses it",
                a.device
            )));
        }
    }
    Ok(())
}
