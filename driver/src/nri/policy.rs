//! Which CPUs each container may run on, apart from the protocol.
//!
//! A container carrying `DRA_CPUSET_<claimUID>=<cpuset>` (the env the claim's CDI spec gives it) runs
//! on its claims' CPUs; every other container runs on the shared pool: the allocatable CPUs (online,
//! not reserved) minus every CPU a prepared claim holds. The claim is trusted only as the checkpoint
//! records it: its UID must be prepared here, its CPUs must be the recorded ones, and the pod must be
//! one the claim is reserved for. Anything else, or an empty shared pool, refuses the container
//! (fails closed) rather than letting it run unconfined or on another claim's CPUs.

use std::collections::BTreeMap;

use hal::CpuSet;

/// The prefix of the env variable that names a claim's CPUs.
pub const ENV_PREFIX: &str = "DRA_CPUSET_";

/// The CPUs of one prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimCpus {
    /// The claim's exclusive CPUs.
    pub cpus: CpuSet,
    /// UIDs of the pods the claim is reserved for (`status.reservedFor`); empty: not recorded (a
    /// checkpoint written before this field), any pod.
    pub pods: Vec<String>,
}

/// The node's CPUs and the prepared claims, by claim UID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Online CPUs that are not reserved.
    pub allocatable: CpuSet,
    /// Claims with CPUs.
    pub claims: BTreeMap<String, ClaimCpus>,
}

impl Snapshot {
    /// Every CPU a claim holds.
    pub fn exclusive(&self) -> CpuSet {
        self.claims.values().flat_map(|c| c.cpus.iter()).collect()
    }

    /// What containers without a claim run on.
    pub fn shared_pool(&self) -> CpuSet {
        self.allocatable.difference(&self.exclusive())
    }
}

/// Where a container belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// On its claims' CPUs.
    Exclusive(Vec<String>),
    /// On the shared pool.
    Shared,
}

/// Why a container is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A `DRA_CPUSET_<uid>` entry without `=`.
    #[error("{ENV_PREFIX}{entry}: no value")]
    NoValue {
        /// The entry after the prefix.
        entry: String,
    },
    /// The value is not a cpulist.
    #[error("{ENV_PREFIX}{uid}={value}: not a cpulist: {problem}")]
    NotCpulist {
        /// The claim UID the entry names.
        uid: String,
        /// The value.
        value: String,
        /// Why it does not parse.
        problem: String,
    },
    /// No claim with this UID is prepared here (forged, or unprepared meanwhile).
    #[error("{ENV_PREFIX}{uid}: no claim with this UID is prepared on this node")]
    UnknownClaim {
        /// The claim UID the entry names.
        uid: String,
    },
    /// The entry names other CPUs than the claim holds.
    #[error("{ENV_PREFIX}{uid}={value}: the claim holds CPUs {held}")]
    WrongCpus {
        /// The claim UID.
        uid: String,
        /// The value.
        value: String,
        /// What the claim holds.
        held: CpuSet,
    },
    /// The claim is reserved for other pods.
    #[error("claim {uid} is reserved for pod(s) {}, not for pod {pod}", reserved.join(", "))]
    OtherPod {
        /// The claim UID.
        uid: String,
        /// The pods it is reserved for.
        reserved: Vec<String>,
        /// The container's pod.
        pod: String,
    },
    /// A container's env is refused.
    #[error("container {name}: {source}")]
    Container {
        /// The container's name.
        name: String,
        /// Why.
        #[source]
        source: Box<PolicyError>,
    },
    /// No claim for the container, and no CPU left for the shared pool.
    #[error(
        "container {name}: the shared CPU pool is empty (allocatable {allocatable}, held by claims {held}); refusing to run it unconfined"
    )]
    EmptyPool {
        /// The container's name.
        name: String,
        /// The allocatable CPUs.
        allocatable: CpuSet,
        /// The CPUs claims hold.
        held: CpuSet,
    },
}

impl PolicyError {
    /// Whether the container's env is at fault (forged, stale or malformed), rather than the node
    /// having no CPU left for it.
    pub fn is_bad_env(&self) -> bool {
        match self {
            PolicyError::EmptyPool { .. } => false,
            PolicyError::Container { source, .. } => source.is_bad_env(),
            _ => true,
        }
    }
}

/// The claims a container's env names that are prepared for other pods than `pod_uid`: those whose
/// pods to read again (a pod that came to share the claim after it was prepared), before refusing it.
pub fn reserved_for_others(snapshot: &Snapshot, pod_uid: &str, env: &[String]) -> Vec<String> {
    let mut uids: Vec<String> = Vec::new();
    for entry in env {
        let Some((uid, _)) = entry
            .strip_prefix(ENV_PREFIX)
            .and_then(|rest| rest.split_once('='))
        else {
            continue;
        };
        let Some(claim) = snapshot.claims.get(uid) else {
            continue;
        };
        let others = !claim.pods.is_empty() && !claim.pods.iter().any(|p| p == pod_uid);
        if others && !uids.iter().any(|u| u == uid) {
            uids.push(uid.to_owned());
        }
    }
    uids
}

/// The claims a container's env names, checked against the snapshot.
pub fn classify(
    snapshot: &Snapshot,
    pod_uid: &str,
    env: &[String],
) -> Result<Placement, PolicyError> {
    let mut claims = Vec::new();
    for entry in env {
        let Some(rest) = entry.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let (uid, value) = rest.split_once('=').ok_or_else(|| PolicyError::NoValue {
            entry: rest.to_owned(),
        })?;
        let asked = CpuSet::from_cpulist(value).map_err(|e| PolicyError::NotCpulist {
            uid: uid.to_owned(),
            value: value.to_owned(),
            problem: e.to_string(),
        })?;
        let claim = snapshot
            .claims
            .get(uid)
            .ok_or_else(|| PolicyError::UnknownClaim {
                uid: uid.to_owned(),
            })?;
        if asked != claim.cpus {
            return Err(PolicyError::WrongCpus {
                uid: uid.to_owned(),
                value: value.to_owned(),
                held: claim.cpus.clone(),
            });
        }
        if !claim.pods.is_empty() && !claim.pods.iter().any(|p| p == pod_uid) {
            return Err(PolicyError::OtherPod {
                uid: uid.to_owned(),
                reserved: claim.pods.clone(),
                pod: pod_uid.to_owned(),
            });
        }
        if !claims.contains(&uid.to_owned()) {
            claims.push(uid.to_owned());
        }
    }
    Ok(match claims.is_empty() {
        true => Placement::Shared,
        false => Placement::Exclusive(claims),
    })
}

/// A container the policy manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// Its pod's UID.
    pub pod_uid: String,
    /// Exclusive or shared.
    pub placement: Placement,
    /// The CPUs it runs on now, as far as this plugin knows (`None`: unknown or unconfined).
    pub cpus: Option<CpuSet>,
    /// The containers whose moves the answer to this one's creation carried. containerd drops every
    /// update of a `CreateContainer` that fails after the answer (another plugin failed, a conflict)
    /// and then stops and removes the container; so when it stops, those moves are owed again.
    pub moved: Vec<String>,
}

/// An update to send: the container and its new CPUs.
pub type Update = (String, CpuSet);

/// The containers and the CPUs they should run on.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    snapshot: Snapshot,
    containers: BTreeMap<String, Tracked>,
}

impl Policy {
    /// A policy over `snapshot`, with no containers yet.
    pub fn new(snapshot: Snapshot) -> Policy {
        Policy {
            snapshot,
            containers: BTreeMap::new(),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The containers tracked, by id.
    pub fn containers(&self) -> &BTreeMap<String, Tracked> {
        &self.containers
    }

    /// The CPUs a placement stands for now; empty when it cannot be honoured (an empty pool).
    fn cpus_for(&self, placement: &Placement) -> CpuSet {
        match placement {
            Placement::Exclusive(claims) => {
                let held: CpuSet = claims
                    .iter()
                    .filter_map(|uid| self.snapshot.claims.get(uid))
                    .flat_map(|c| c.cpus.iter())
                    .collect();
                // Claims unprepared under a running container: it joins the shared pool.
                match held.is_empty() {
                    true => self.snapshot.shared_pool(),
                    false => held,
                }
            }
            Placement::Shared => self.snapshot.shared_pool(),
        }
    }

    /// A container being created: the CPUs to give it, and the updates other containers need.
    pub fn create(
        &mut self,
        id: &str,
        name: &str,
        pod_uid: &str,
        env: &[String],
    ) -> Result<(CpuSet, Vec<Update>), PolicyError> {
        let placement =
            classify(&self.snapshot, pod_uid, env).map_err(|e| PolicyError::Container {
                name: name.to_owned(),
                source: Box::new(e),
            })?;
        let cpus = self.cpus_for(&placement);
        if cpus.is_empty() {
            return Err(PolicyError::EmptyPool {
                name: name.to_owned(),
                allocatable: self.snapshot.allocatable.clone(),
                held: self.snapshot.exclusive(),
            });
        }
        let updates = self.rebalance();
        self.containers.insert(
            id.to_owned(),
            Tracked {
                pod_uid: pod_uid.to_owned(),
                placement,
                cpus: Some(cpus.clone()),
                moved: updates.iter().map(|(moved, _)| moved.clone()).collect(),
            },
        );
        Ok((cpus, updates))
    }

    /// A container's resources being updated by the runtime (the kubelet): its CPUs stay ours, and
    /// the answer also carries what other containers are owed ([`Policy::owed`]).
    pub fn update(&mut self, id: &str) -> Vec<Update> {
        let mut updates = self.owed();
        if let Some(tracked) = self.containers.get(id) {
            let cpus = self.cpus_for(&tracked.placement);
            if !cpus.is_empty() && !updates.iter().any(|(u, _)| u == id) {
                updates.push((id.to_owned(), cpus));
            }
        }
        updates
    }

    /// A container stopping: it is forgotten, and the answer carries what the remaining containers
    /// are owed, the moves its creation's answer carried included (see [`Tracked::moved`]).
    pub fn stop(&mut self, id: &str) -> Vec<Update> {
        self.forget(id);
        self.owed()
    }

    /// A container stopped or removed; the moves its creation's answer carried are owed again.
    pub fn forget(&mut self, id: &str) {
        let Some(gone) = self.containers.remove(id) else {
            return;
        };
        for moved in gone.moved {
            if let Some(tracked) = self.containers.get_mut(&moved) {
                tracked.cpus = None;
            }
        }
    }

    /// The runtime's containers, all of them (at `Synchronize`): the table is rebuilt from them, and
    /// each one whose CPUs differ from its placement is updated. A container whose claim no longer
    /// checks out (unprepared while it ran) joins the shared pool, with a warning.
    pub fn synchronize(&mut self, containers: Vec<SyncedContainer>) -> Vec<Update> {
        self.containers.clear();
        for c in containers {
            let placement = classify(&self.snapshot, &c.pod_uid, &c.env).unwrap_or_else(|error| {
                tracing::warn!(container = %c.name, %error, "running on the shared pool instead");
                Placement::Shared
            });
            self.containers.insert(
                c.id,
                Tracked {
                    pod_uid: c.pod_uid,
                    placement,
                    cpus: c.cpus,
                    moved: Vec::new(),
                },
            );
        }
        self.rebalance()
    }

    /// New claims: the updates that move containers to the new pool (never to an empty one), for a
    /// caller that sends them at once (unsolicited).
    pub fn set_snapshot(&mut self, snapshot: Snapshot) -> Vec<Update> {
        self.snapshot = snapshot;
        self.rebalance()
    }

    /// New claims, with nothing sent: the moves they cause are owed until the next event whose
    /// answer may carry them ([`Policy::owed`]).
    pub fn replace_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
    }

    /// The updates owed to containers not on the CPUs of their placement (to send now; each is
    /// then counted as applied). An empty target is skipped with a warning.
    pub fn owed(&mut self) -> Vec<Update> {
        self.rebalance()
    }

    /// Updates the runtime did not apply: those containers' CPUs are unknown again, so the next
    /// [`Policy::retry`] sends them again.
    pub fn invalidate(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(tracked) = self.containers.get_mut(id) {
                tracked.cpus = None;
            }
        }
    }

    /// An answer that never reached the runtime (refused as too large): no container's CPUs are
    /// known any more, so the next answers carry every container's placement again.
    pub fn invalidate_all(&mut self) {
        for tracked in self.containers.values_mut() {
            tracked.cpus = None;
        }
    }

    /// The updates still owed: containers whose last update failed (quietly skipping an empty pool,
    /// which was reported when it emptied).
    pub fn retry(&mut self) -> Vec<Update> {
        self.rebalance_with(false)
    }

    /// Updates for every container not on the CPUs of its placement. An empty target is skipped with
    /// a warning: an empty cpuset means "no change" to a runtime, never "no CPU".
    fn rebalance(&mut self) -> Vec<Update> {
        self.rebalance_with(true)
    }

    fn rebalance_with(&mut self, warn: bool) -> Vec<Update> {
        let mut updates = Vec::new();
        let mut spent = 0;
        let mut deferred = 0;
        let targets: Vec<(String, CpuSet)> = self
            .containers
            .iter()
            .map(|(id, t)| (id.clone(), self.cpus_for(&t.placement)))
            .collect();
        for (id, target) in targets {
            let Some(tracked) = self.containers.get_mut(&id) else {
                continue;
            };
            if target.is_empty() {
                if warn {
                    tracing::warn!(container = %id, "the shared CPU pool is empty; container left as it is");
                }
                continue;
            }
            if tracked.cpus.as_ref() != Some(&target) {
                let size = update_size(&id, &target);
                if spent + size > ANSWER_BUDGET {
                    deferred += 1;
                    continue;
                }
                spent += size;
                tracked.cpus = Some(target.clone());
                updates.push((id, target));
            }
        }
        if deferred > 0 {
            tracing::warn!(
                sent = updates.len(),
                deferred,
                budget = ANSWER_BUDGET,
                "too many CPU updates for one NRI message; the rest go with the next ones"
            );
        }
        updates
    }
}

/// The most bytes of updates one message carries: half of ttrpc's 4 MiB limit, which a runtime
/// refuses to read past. Updates over it stay owed and go with the next answer (or retry).
pub const ANSWER_BUDGET: usize = 2 << 20;

/// About what an update of `id` to `cpus` takes in a message (the id, the cpulist, the framing).
fn update_size(id: &str, cpus: &CpuSet) -> usize {
    id.len() + cpus.to_cpulist().len() + 32
}

/// A container as the runtime reports it at `Synchronize`.
#[derive(Debug, Clone)]
pub struct SyncedContainer {
    /// Container id.
    pub id: String,
    /// Container name (for messages).
    pub name: String,
    /// Its pod's UID.
    pub pod_uid: String,
    /// Its env.
    pub env: Vec<String>,
    /// The CPUs it runs on (`None`: not set, or not a cpulist).
    pub cpus: Option<CpuSet>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
