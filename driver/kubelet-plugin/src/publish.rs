//! [`Publisher`]: keeps a node's pool of ResourceSlices in the API server equal to the slices a driver
//! wants published, compared with what the API server holds, not with what this process believes it
//! wrote.
//!
//! The driver builds its slices (`metadata.name`, `spec.driver`, `spec.nodeName`, `spec.pool.name` and
//! `resourceSliceCount` set; the generation is the publisher's) and hands them to
//! [`Publisher::publish`], or gives [`publish_loop`] a function that reads them. Slices that break the
//! API server's rules ([`crate::slices::validate_pool`], for the Kubernetes version of
//! [`Publisher::with_kube_version`]) or the driver's own check ([`Publisher::with_check`]) are never
//! sent.
//!
//! * What the API server holds for this node and driver (field selectors `spec.nodeName` and
//!   `spec.driver`) is listed once, then kept current by a watch ([`publish_loop`]) and by the answers
//!   to this process's own writes. Another actor's change (the kubelet deletes all of the node's slices
//!   at its start; an admin edits or adds one) arrives as a watch event and is repaired at once.
//! * A node whose slices are as they should be costs no API call: the comparison is with the watched
//!   state, in memory.
//! * Generations follow the resourceslice controller of `k8s.io/dynamic-resource-allocation`
//!   (`syncPool`): the pool keeps its highest generation when one write repairs it (one slice changed,
//!   or one extra slice deleted), and otherwise every slice is written with the generation bumped (the
//!   scheduler only trusts a pool whose slices all carry the highest generation); slices no longer
//!   needed are deleted afterwards, so the pool is never incomplete at its newest generation.
//! * Updates carry the `resourceVersion` observed; a conflict (someone else wrote the slice) re-reads it
//!   and retries. Every slice has the Node as its owner, so deleting the node deletes them.
//! * Every call has a deadline ([`CALL_TIMEOUT`]); any failure drops the watched state, so the next
//!   attempt (after a backoff, see [`publish_loop`]) starts from a fresh list.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, ListParams, PostParams, Preconditions, WatchEvent, WatchParams,
};

use crate::client::{CALL_TIMEOUT, ErrorKind, kind_of};
use crate::slices::KubeVersion;

mod run;
pub use run::publish_loop;

/// How often a write that conflicts is tried in all, re-reading the slice before each retry, and
/// the pause before each retry: client-go's `retry.DefaultRetry` for `RetryOnConflict` (5 steps of
/// 10 ms; `k8s.io/client-go/util/retry/util.go`), so that a writer racing this one (an admin's edit,
/// the kubelet's wipe) gets its write done instead of both spinning.
const CONFLICT_RETRIES: usize = 5;
const CONFLICT_PAUSE: Duration = Duration::from_millis(10);

/// How long the API server is asked to keep a watch open (kube's runtime watcher asks 290 s too).
pub const WATCH_SECONDS: u32 = 290;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The slices would be rejected by the API server, or are not this publisher's node and driver: a
    /// bug in the driver's model, never sent. One message per broken rule, naming the slice and field.
    #[error("the slices break API rules: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// An API call failed.
    #[error("{op} {name}: {kind}: {source}")]
    Api {
        /// What was being done (`create`, `update`, `delete`, `list`, `get`, `watch`).
        op: &'static str,
        /// The slice (or node, or list selector) concerned.
        name: String,
        /// What kind of failure, for the retry decision.
        kind: ErrorKind,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A slice of the name exists and is another driver's or another node's (two driver names that
    /// make the same slice names, as `gpu.example.com` and `gpu-example.com`): not taken over.
    #[error(
        "slice {name} exists with spec.driver {driver:?} and spec.nodeName {node:?}: not this \
         publisher's, so not overwritten (the names collide)"
    )]
    Taken {
        /// The slice.
        name: String,
        /// Its driver.
        driver: String,
        /// Its node.
        node: Option<String>,
    },
    /// An API call got no (complete) answer in time.
    #[error("{op} {name}: no answer within {after:?}")]
    Timeout {
        /// What was being done.
        op: &'static str,
        /// The object or selector concerned.
        name: String,
        /// The deadline.
        after: Duration,
    },
}

impl PublishError {
    /// The kind of API failure; `None` for slices that break API rules (retrying cannot help).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            PublishError::Invalid(_) => None,
            PublishError::Api { kind, .. } => Some(*kind),
            PublishError::Timeout { .. } => Some(ErrorKind::Timeout),
            // Retried with backoff: the other slice may go.
            PublishError::Taken { .. } => Some(ErrorKind::Conflict),
        }
    }
}

/// What one [`Publisher::publish`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Slices created.
    pub created: usize,
    /// Slices replaced.
    pub updated: usize,
    /// Slices deleted.
    pub deleted: usize,
    /// The pool generation now in the API server.
    pub generation: i64,
}

impl PublishReport {
    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        self.created + self.updated + self.deleted > 0
    }
}

/// What the API server holds for this node and driver.
struct Observed {
    /// By name, as listed, watched, or returned by this process's writes.
    slices: BTreeMap<String, ResourceSlice>,
    /// Where a watch resumes: the list's version, then each watch event's.
    resource_version: String,
}

/// A watch's events.
pub type SliceEvents = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<WatchEvent<ResourceSlice>, kube::Error>> + Send>,
>;

/// A driver's own check of its slices, run after [`validate_pool`](crate::slices::validate_pool): one
/// message per broken rule.
pub type SliceCheck = Box<dyn Fn(&[ResourceSlice]) -> Vec<String> + Send + Sync>;

/// Publishes one node's pool of one driver.
pub struct Publisher {
    slices: Api<ResourceSlice>,
    nodes: Api<Node>,
    /// `spec.nodeName` of the slices, and the Node that owns them.
    node_name: String,
    /// `spec.driver` of the slices.
    driver_name: String,
    /// The driver's own check, run before anything is sent.
    check: Option<SliceCheck>,
    /// The Kubernetes version whose API server rules the slices are checked against.
    kube_version: KubeVersion,
    owner: Option<OwnerReference>,
    /// `None`: list before the next comparison.
    observed: Option<Observed>,
    /// Slices the API server stored otherwise than sent (it drops fields whose feature gate is off):
    /// name → (sent spec, stored spec). The stored form then counts as the sent one, so that a watch
    /// event does not start a rewrite that the server undoes again.
    dropped: BTreeMap<String, (ResourceSliceSpec, ResourceSliceSpec)>,
}

/// Runs one API call under [`CALL_TIMEOUT`], keeping what failed and how.
async fn call<T>(
    op: &'static str,
    name: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, PublishError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(PublishError::Api {
            op,
            name: name.to_owned(),
            kind: kind_of(&source),
            source,
        }),
        Err(_) => Err(PublishError::Timeout {
            op,
            name: name.to_owned(),
            after: CALL_TIMEOUT,
        }),
    }
}

impl Publisher {
    /// A publisher of `driver_name`'s slices on node `node_name`.
    pub fn new(client: kube::Client, node_name: &str, driver_name: &str) -> Self {
        Publisher {
            slices: Api::all(client.clone()),
            nodes: Api::all(client),
            node_name: node_name.to_owned(),
            driver_name: driver_name.to_owned(),
            check: None,
            kube_version: KubeVersion::V1_34,
            owner: None,
            observed: None,
            dropped: BTreeMap::new(),
        }
    }

    /// Adds a check of the driver's own, run after the API server's rules
    /// ([`validate_pool`](crate::slices::validate_pool)); slices that fail either are never sent
    /// ([`PublishError::Invalid`]).
    pub fn with_check(
        mut self,
        check: impl Fn(&[ResourceSlice]) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    /// Checks the slices against the API server rules of Kubernetes `version` (default 1.34, the
    /// first with `resource.k8s.io/v1`): a driver that lays its slices out for the server's version
    /// (counter sets in slices of their own, the taint effect `None`: 1.35 and later) says so here.
    pub fn with_kube_version(mut self, version: KubeVersion) -> Self {
        self.kube_version = version;
        self
    }

    /// `spec.nodeName=<node>,spec.driver=<driver>`.
    pub(crate) fn selector(&self) -> String {
        format!(
            "spec.nodeName={},spec.driver={}",
            self.node_name, self.driver_name
        )
    }

    /// What makes `desired` unfit to send: the API server's rules, the driver's check, then slices
    /// without a name, with the name of another, or of another node or driver (the list would never see them, so they would be
    /// created again and again).
    fn invalid(&self, desired: &[ResourceSlice]) -> Vec<String> {
        let mut errors: Vec<String> = crate::slices::validate_pool(desired, self.kube_version)
            .iter()
            .map(ToString::to_string)
            .collect();
        errors.extend(self.check.as_ref().map(|c| c(desired)).unwrap_or_default());
        let mut names = std::collections::HashSet::new();
        for (i, slice) in desired.iter().enumerate() {
            let Some(name) = slice.metadata.name.as_deref() else {
                errors.push(format!("slice #{i}: metadata.name: missing"));
                continue;
            };
            // Two slices of one name: the second would overwrite the first, leaving the pool short
            // of a slice for good (its resourceSliceCount counts both).
            if !names.insert(name) {
                errors.push(format!(
                    "slice #{i}: metadata.name: {name:?} is the name of an earlier slice"
                ));
            }
            if slice.spec.node_name.as_deref() != Some(self.node_name.as_str()) {
                errors.push(format!(
                    "slice {name}: spec.nodeName: {:?}, not this publisher's node {:?}",
                    slice.spec.node_name, self.node_name
                ));
            }
            if slice.spec.driver != self.driver_name {
                errors.push(format!(
                    "slice {name}: spec.driver: {:?}, not this publisher's driver {:?}",
                    slice.spec.driver, self.driver_name
                ));
            }
        }
        errors
    }

    /// Whether the API server's state is known (listed, and not dropped after a failure).
    pub fn synced(&self) -> bool {
        self.observed.is_some()
    }

    /// Drops the watched state: the next [`Publisher::publish`] lists again.
    pub fn forget(&mut self) {
        self.observed = None;
    }

    /// Makes the API server hold exactly the slices `desired` (of this node and driver; their pool
    /// generation is ignored, the publisher sets it). Any failure drops the watched state.
    pub async fn publish(
        &mut self,
        desired: &[ResourceSlice],
    ) -> Result<PublishReport, PublishError> {
        let result = self.reconcile(desired).await;
        if result.is_err() {
            self.forget();
        }
        result
    }

    async fn reconcile(
        &mut self,
        desired: &[ResourceSlice],
    ) -> Result<PublishReport, PublishError> {
        let fetched_owner = self.owner.is_none();
        if fetched_owner {
            self.owner = Some(self.node_owner().await?);
        }
        let mut desired = desired.to_vec();
        // The generation is the publisher's (set by `write`): the check must not refuse a pool for
        // generations that are replaced anyway.
        for slice in &mut desired {
            slice.spec.pool.generation = 0;
        }
        let errors = self.invalid(&desired);
        if !errors.is_empty() {
            return Err(PublishError::Invalid(errors));
        }
        let mut observed = match self.observed.take() {
            Some(observed) => observed,
            None => self.list().await?,
        };
        // The Node is read again before any slice is created: a Node deleted and re-created under the
        // same name has another UID, and slices owned by the old one are deleted by the garbage
        // collector as soon as they are written.
        let must_create = desired.iter().any(|d| {
            !observed
                .slices
                .contains_key(d.metadata.name.as_deref().unwrap_or_default())
        });
        if must_create && !fetched_owner {
            self.owner = Some(self.node_owner().await?);
        }
        let current = observed
            .slices
            .values()
            .map(|s| s.spec.pool.generation)
            .max()
            .unwrap_or(0);
        let owners = self.owner_list();
        let name_of = |s: &ResourceSlice| s.metadata.name.clone().unwrap_or_default();
        let (mut missing, mut changed) = (0, 0);
        for d in &desired {
            match observed.slices.get(&name_of(d)) {
                None => missing += 1,
                Some(o) => {
                    let mut want = d.spec.clone();
                    want.pool.generation = current;
                    if !self.same(&name_of(d), &want, &o.spec)
                        || o.metadata.owner_references != owners
                    {
                        changed += 1;
                    }
                }
            }
        }
        let wanted: Vec<String> = desired.iter().map(name_of).collect();
        let extra: Vec<String> = observed
            .slices
            .keys()
            .filter(|n| !wanted.contains(n))
            .cloned()
            .collect();
        // As upstream's syncPool: a single write is atomic for consumers; anything more, or a slice
        // to add, gets a new generation on every slice.
        let bump = missing > 0 || changed + extra.len() > 1;
        let generation = if bump { current + 1 } else { current };
        let mut report = PublishReport {
            generation,
            ..Default::default()
        };
        let result = self
            .write(desired, generation, bump, &mut observed, &mut report)
            .await;
        self.observed = Some(observed);
        result?;
        for name in extra {
            // As upstream's `removeSlices` (k8s.io/dynamic-resource-allocation/resourceslice): only
            // the slice as observed, by UID and resourceVersion. One re-created or changed meanwhile
            // (by the kubelet, an admin, a driver with a colliding name) fails with 409; the publish
            // fails, and the next attempt lists afresh.
            let preconditions = self
                .observed
                .as_ref()
                .and_then(|o| o.slices.get(&name))
                .map(|slice| Preconditions {
                    uid: slice.metadata.uid.clone(),
                    resource_version: slice.metadata.resource_version.clone(),
                });
            let params = DeleteParams {
                preconditions,
                ..DeleteParams::default()
            };
            match call("delete", &name, self.slices.delete(&name, &params)).await {
                Ok(_) => report.deleted += 1,
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
            if let Some(observed) = self.observed.as_mut() {
                observed.slices.remove(&name);
            }
        }
        Ok(report)
    }

    /// Whether the API server's `stored` spec is what writing `want` gives.
    fn same(&self, name: &str, want: &ResourceSliceSpec, stored: &ResourceSliceSpec) -> bool {
        want == stored
            || self
                .dropped
                .get(name)
                .is_some_and(|(sent, kept)| sent == want && kept == stored)
    }

    /// Writes the desired slices that differ (all of them when `bump`), recording each answer.
    async fn write(
        &mut self,
        desired: Vec<ResourceSlice>,
        generation: i64,
        bump: bool,
        observed: &mut Observed,
        report: &mut PublishReport,
    ) -> Result<(), PublishError> {
        for mut slice in desired {
            slice.spec.pool.generation = generation;
            slice.metadata.owner_references = self.owner_list();
            let name = slice.metadata.name.clone().unwrap_or_default();
            let sent = slice.spec.clone();
            let stored = match observed.slices.get(&name) {
                Some(old)
                    if !bump
                        && self.same(&name, &slice.spec, &old.spec)
                        && old.metadata.owner_references == slice.metadata.owner_references =>
                {
                    continue;
                }
                Some(old) => {
                    slice.metadata.resource_version = old.metadata.resource_version.clone();
                    report.updated += 1;
                    self.replace(&name, slice).await?
                }
                None => {
                    report.created += 1;
                    self.create(&name, slice).await?
                }
            };
            if stored.spec == sent {
                self.dropped.remove(&name);
            } else if self
                .dropped
                .get(&name)
                .is_none_or(|(before, _)| *before != sent)
            {
                tracing::warn!(
                    slice = %name,
                    "the API server stored the ResourceSlice otherwise than sent (a field of a \
                     feature gate that is off dropped, or a value normalized); that form counts as \
                     published"
                );
                self.dropped
                    .insert(name.clone(), (sent, stored.spec.clone()));
            }
            observed.slices.insert(name, stored);
        }
        Ok(())
    }

    /// The slices of this node and driver in the API server, and the version to watch from.
    async fn list(&self) -> Result<Observed, PublishError> {
        let selector = self.selector();
        let list = call(
            "list",
            &selector,
            self.slices.list(&ListParams::default().fields(&selector)),
        )
        .await?;
        let slices = list
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
        Ok(Observed {
            slices,
            resource_version: list.metadata.resource_version.unwrap_or_default(),
        })
    }

    /// Watches this node's slices of this driver from the version last seen. Needs [`Self::synced`].
    pub async fn watch(&self) -> Result<SliceEvents, PublishError> {
        let selector = self.selector();
        let version = self
            .observed
            .as_ref()
            .map(|o| o.resource_version.clone())
            .unwrap_or_default();
        let params = WatchParams::default()
            .fields(&selector)
            .timeout(WATCH_SECONDS);
        let events = call("watch", &selector, self.slices.watch(&params, &version)).await?;
        Ok(Box::pin(events))
    }

    /// Takes a watch event into the watched state; `Ok(true)` when the state changed (compare again).
    /// An `ERROR` event (`410 Gone` when the version is too old) is returned as the error.
    pub fn apply(&mut self, event: WatchEvent<ResourceSlice>) -> Result<bool, PublishError> {
        let Some(observed) = self.observed.as_mut() else {
            return Ok(false);
        };
        let (slice, deleted) = match event {
            WatchEvent::Added(slice) | WatchEvent::Modified(slice) => (slice, false),
            WatchEvent::Deleted(slice) => (slice, true),
            WatchEvent::Bookmark(bookmark) => {
                observed.resource_version = bookmark.metadata.resource_version;
                return Ok(false);
            }
            WatchEvent::Error(status) => {
                let source = kube::Error::Api(status);
                return Err(PublishError::Api {
                    op: "watch",
                    name: self.selector(),
                    kind: kind_of(&source),
                    source,
                });
            }
        };
        if let Some(version) = &slice.metadata.resource_version {
            observed.resource_version.clone_from(version);
        }
        let Some(name) = slice.metadata.name.clone() else {
            return Ok(false);
        };
        // An event older than what this process wrote since (the answer to its write came first) says
        // nothing new. Versions are compared as integers, as upstream's controller does
        // (`cache.NewIntegerResourceVersionMutationCache` in `resourceslicecontroller.go`).
        let version = |s: &ResourceSlice| {
            s.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let (Some(known), Some(event)) = (
            observed.slices.get(&name).and_then(version),
            version(&slice),
        ) && event < known
        {
            return Ok(false);
        }
        if deleted {
            return Ok(observed.slices.remove(&name).is_some());
        }
        let changed = observed.slices.get(&name) != Some(&slice);
        observed.slices.insert(name, slice);
        Ok(changed)
    }

    /// The Node as controlling owner, so the slices go with it.
    async fn node_owner(&self) -> Result<OwnerReference, PublishError> {
        let name = &self.node_name;
        let node = call("get node", name, self.nodes.get(name)).await?;
        Ok(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.clone(),
            uid: node.metadata.uid.unwrap_or_default(),
            controller: Some(true),
            ..Default::default()
        })
    }

    fn owner_list(&self) -> Option<Vec<OwnerReference>> {
        self.owner.clone().map(|o| vec![o])
    }

    async fn create(
        &self,
        name: &str,
        slice: ResourceSlice,
    ) -> Result<ResourceSlice, PublishError> {
        match call(
            "create",
            name,
            self.slices.create(&PostParams::default(), &slice),
        )
        .await
        {
            // Written by someone this process has not seen yet: take it over.
            Err(e) if e.kind() == Some(ErrorKind::Conflict) => self.replace(name, slice).await,
            other => other,
        }
    }

    async fn replace(
        &self,
        name: &str,
        mut slice: ResourceSlice,
    ) -> Result<ResourceSlice, PublishError> {
        for attempt in 0..CONFLICT_RETRIES {
            if attempt > 0 {
                tokio::time::sleep(CONFLICT_PAUSE).await;
            }
            if slice.metadata.resource_version.is_none() {
                let current = call("get", name, self.slices.get(name)).await?;
                if current.spec.driver != self.driver_name
                    || current.spec.node_name.as_deref() != Some(self.node_name.as_str())
                {
                    return Err(PublishError::Taken {
                        name: name.to_owned(),
                        driver: current.spec.driver,
                        node: current.spec.node_name,
                    });
                }
                slice.metadata.resource_version = current.metadata.resource_version;
            }
            let params = PostParams::default();
            match call("update", name, self.slices.replace(name, &params, &slice)).await {
                Ok(stored) => return Ok(stored),
                Err(e) if e.kind() == Some(ErrorKind::Conflict) => {
                    slice.metadata.resource_version = None;
                }
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => {
                    // Deleted meanwhile (by the kubelet, the garbage collector or an admin): create it.
                    slice.metadata.resource_version = None;
                    return call("create", name, self.slices.create(&params, &slice)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PublishError::Api {
            op: "update",
            name: name.to_owned(),
            kind: ErrorKind::Conflict,
            source: kube::Error::Service(
                format!("still conflicting after {CONFLICT_RETRIES} retries").into(),
            ),
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests_reconcile;
