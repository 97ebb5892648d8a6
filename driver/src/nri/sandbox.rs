//! Pod networking on the runtime's pod sandbox events: at `RunPodSandbox`, every network function of
//! a prepared claim reserved for the pod is attached into the sandbox's network namespace, in CNI
//! mode ([`crate::podnet::cni`]) when its `VfConfig` names a NetworkAttachmentDefinition, in direct
//! mode ([`crate::podnet::direct`], [`direct`]) when the claim gives it a `NetworkConfig`, and its
//! `networkData` written to the claim's status (in a task of its own: the answer does not wait for
//! the API server); an error fails the sandbox with a message naming the claim, the device and the
//! field, and undoes what the sandbox got so far. At `StopPodSandbox` and `RemovePodSandbox` the
//! cached CNI attachments of the sandbox get their `DEL` and its direct-mode netdevs go home; after
//! each `Synchronize`, those of sandboxes the runtime no longer has (gone while the plugin was down),
//! listed and torn down off the event loop, so the runtime's other events are answered meanwhile. A
//! state directory that cannot be listed never reads as empty: the teardown (or the cleanup after a
//! `Synchronize`) fails, and is tried again. A teardown that fails (at a stop or removal, in the
//! undo of a failed start, or after a `Synchronize`) is tried again while the plugin is connected
//! ([`PodNetwork::retry_teardowns`]), [`TEARDOWN_RETRY`] after it failed, then after twice as long
//! each time up to [`TEARDOWN_RETRY_MAX`], and on at that pace until it succeeds: the runtime only
//! logs a plugin's failed stop, and nothing else would try again before the next reconnection. The
//! sandboxes whose teardown failed are kept in memory for the life of the process, across
//! reconnections (each connection's task tries them again, on the same schedule); a plugin restart
//! forgets them, and leaves what they hold to the cleanup after its first `Synchronize`. The events of
//! one sandbox never run at once (one lock per sandbox id).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::endpoint::code;
use super::plugin::event;
use super::proto::api;
use super::proto::ttrpc::Status;
use crate::plugin::checkpoint::{CheckpointError, ClaimRecord};
use crate::plugin::prepare::ClaimSource;
use crate::podnet::cni::{self, Attachment, Cni, ConfList};
use crate::podnet::direct::Detached;
use crate::podnet::error::NetError;
use crate::podnet::moved::Moved;
use crate::podnet::pods::{PodFunction, of_pod};

pub mod direct;
mod error;
mod sandboxes;

pub use error::SandboxError;
pub(crate) use sandboxes::Sandboxes;
use sandboxes::log_failed;
pub use sandboxes::{SyncMark, TEARDOWN_RETRY, TEARDOWN_RETRY_MAX};

/// The prepared claims now (the checkpoint, read only).
pub type Prepared =
    Arc<dyn Fn() -> Result<BTreeMap<String, ClaimRecord>, CheckpointError> + Send + Sync>;

/// Reads a NetworkAttachmentDefinition (namespace, name).
pub type NadReader = Arc<
    dyn Fn(
            String,
            String,
        ) -> crate::plugin::api::BoxFuture<'static, Result<ConfList, cni::CniError>>
        + Send
        + Sync,
>;

/// What pod networking needs.
#[derive(Clone)]
pub struct PodNetwork {
    /// The CNI runtime (bin dirs, cache).
    pub cni: Cni,
    /// The prepared claims.
    pub prepared: Prepared,
    /// NetworkAttachmentDefinitions.
    pub nads: NadReader,
    /// Where `networkData` is written (none: not written).
    pub claims: Option<Arc<dyn ClaimSource>>,
    /// The driver's name (the status entries' `driver`).
    pub driver: String,
    /// The pool (the node's name).
    pub pool: String,
    /// Direct mode: the host's network namespace and the state of the netdevs moved.
    pub direct: direct::DirectMode,
    /// One lock per pod sandbox id, and the sandboxes started since, shared by the clones.
    pub(crate) sandboxes: Arc<Sandboxes>,
}

impl PodNetwork {
    /// What to tell the operator when the runtime's time for one call (`request_timeout_ms`, from
    /// `Configure`; 0 when the runtime does not say) is shorter than even one CNI plugin call may
    /// take ([`Cni::timeout`]; an attach runs several in turn, each CNI-mode function after the
    /// read of its NetworkAttachmentDefinition, up to [`cni::nad::TIMEOUT`], so this is the least to
    /// ask): the attach runs inside `RunPodSandbox`, and containerd treats a call past its timeout as
    /// fatal (containerd/nri `pkg/adaptation/plugin.go`, `isFatalError`:
    /// `context.DeadlineExceeded`): it drops the plugin and starts the sandbox, and the attach,
    /// which goes on, brings the network functions in late. (The claim's status write of
    /// `networkData` is not waited for: it runs in a task of its own.)
    pub fn request_timeout_warning(&self, request_timeout_ms: i64) -> Option<String> {
        let cni = self.cni.timeout;
        let given = match u64::try_from(request_timeout_ms) {
            Ok(0) | Err(_) => "does not say how long it waits for one call (containerd's \
                               plugin_request_timeout, 2 s by default)"
                .to_owned(),
            Ok(ms) if u128::from(ms) >= cni.as_millis() => return None,
            Ok(ms) => format!("waits {ms} ms for one call (containerd's plugin_request_timeout)"),
        };
        let nad = cni::nad::TIMEOUT.as_secs();
        Some(format!(
            "the NRI runtime {given}, and pod networking attaches a pod's network functions inside \
             RunPodSandbox, for each CNI-mode function reading its NetworkAttachmentDefinition from \
             the API server (allowed {nad}s) and running each of its CNI plugins in turn, each \
             allowed {}s (--cni-timeout): an attach that takes longer makes containerd drop this \
             plugin and start the pod before its network functions are in; set \
             plugin_request_timeout well above --cni-timeout plus {nad}s per function (docs/nri.md)",
            cni.as_secs()
        ))
    }
}

/// How a teardown names the CNI result cache when it could not be listed.
pub const CNI_UNLISTED: &str = "CNI cache";

/// What a sandbox's teardown did, per CNI attachment and per direct-mode netdev (file names).
#[derive(Debug, Default)]
pub struct Teardown {
    /// CNI `DEL`s.
    pub cni: Vec<(String, Result<(), cni::CniError>)>,
    /// Direct-mode netdevs moved back (or found gone with their namespace).
    pub direct: Vec<(String, Result<Detached, NetError>)>,
}

impl Teardown {
    /// The failures, one message each.
    pub fn failures(&self) -> Vec<String> {
        let cni = self
            .cni
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")));
        let direct = self
            .direct
            .iter()
            .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")));
        cni.chain(direct).collect()
    }
}

/// One attachment made for a sandbox, to undo when a later one fails.
enum Made {
    Cni(cni::Entry),
    Direct(Moved),
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("cni", &self.cni)
            .field("driver", &self.driver)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// The NRI events pod networking subscribes to.
pub const EVENTS: &[i32] = &[
    event::RUN_POD_SANDBOX,
    event::STOP_POD_SANDBOX,
    event::REMOVE_POD_SANDBOX,
];

/// NADs through the API server.
pub fn kube_nads(client: kube::Client) -> NadReader {
    Arc::new(move |namespace, name| {
        let client = client.clone();
        Box::pin(async move { cni::nad::read(&client, &namespace, &name).await })
    })
}

/// The sandbox's network namespace, from NRI.
pub fn netns_of(pod: &api::PodSandbox) -> Option<PathBuf> {
    pod.linux
        .as_ref()?
        .namespaces
        .iter()
        .find(|n| n.r#type == "network" && !n.path.is_empty())
        .map(|n| PathBuf::from(&n.path))
}

impl PodNetwork {
    /// Pod networking of the plugin: plugins from `--cni-bin-dir`, the cache under `state_dir`, the
    /// claims from the checkpoint at `checkpoint` (read only), NADs through `client`, the claims'
    /// status through `claims` (the preparer's source: its status writes of one claim do not
    /// interleave with these).
    pub fn for_plugin(
        args: &cni::CniArgs,
        state_dir: &std::path::Path,
        checkpoint: PathBuf,
        client: kube::Client,
        claims: Arc<dyn ClaimSource>,
        driver: &str,
        pool: &str,
    ) -> PodNetwork {
        let mut runtime = Cni::new(&args.cni_bin_dir, state_dir);
        runtime.timeout = std::time::Duration::from_secs(args.cni_timeout.max(1));
        let network = PodNetwork {
            cni: runtime,
            prepared: Arc::new(move || crate::podnet::pods::read_prepared(&checkpoint)),
            nads: kube_nads(client),
            claims: Some(claims),
            driver: driver.to_owned(),
            pool: pool.to_owned(),
            direct: direct::DirectMode::new(state_dir),
            sandboxes: Arc::default(),
        };
        network.remove_stale_temps();
        network
    }

    /// Removes the temp files that atomic writes of the CNI cache and the direct-mode state left
    /// when the plugin was killed during one (`.<entry>.<random>.tmp`, up to 2 MiB each, whose names
    /// hold a sandbox id, so no later write replaces them); logs what it removed, and a failure
    /// (nothing else depends on it). Once, at start: before any event, so no write is under way.
    pub fn remove_stale_temps(&self) {
        let swept = [
            (CNI_UNLISTED, self.cni.remove_stale_temps()),
            (direct::STATE_UNLISTED, self.direct.remove_stale_temps()),
        ];
        for (what, result) in swept {
            match result {
                Ok(removed) if removed.is_empty() => {}
                Ok(removed) => tracing::info!(
                    ?removed,
                    "temp files of interrupted writes of the {what} removed"
                ),
                Err(error) => {
                    tracing::warn!(%error, "the temp files of interrupted writes of the {what} could not be removed")
                }
            }
        }
    }

    /// Answers a pod sandbox event (`RUN_POD_SANDBOX`, `STOP_POD_SANDBOX`, `REMOVE_POD_SANDBOX`);
    /// an error fails the event with `FAILED_PRECONDITION` and its message; any other event: nothing.
    pub async fn on_event(&self, event: i32, pod: &api::PodSandbox) -> Result<(), Status> {
        let result = match event {
            event::RUN_POD_SANDBOX => self.run_pod_sandbox(pod).await.map(|_| ()),
            event::STOP_POD_SANDBOX | event::REMOVE_POD_SANDBOX => self.stop_pod_sandbox(pod).await,
            _ => return Ok(()),
        };
        result.map_err(|error| Status {
            code: code::FAILED_PRECONDITION,
            message: error.to_string(),
        })
    }

    /// Attaches the pod's network functions (CNI or direct mode); returns the interfaces made (claim
    /// device, name in the pod).
    pub async fn run_pod_sandbox(
        &self,
        pod: &api::PodSandbox,
    ) -> Result<Vec<(String, String)>, SandboxError> {
        let _sandbox = self.sandboxes.lock(&pod.id).await;
        if self.sandboxes.started_again(&pod.id) {
            tracing::info!(sandbox = %pod.id, pod = %pod.name,
                "a sandbox whose teardown failed runs again: not torn down until its next stop");
        }
        // Every record read (a file each): off the async workers, which answer the runtime's
        // other events meanwhile.
        let read = self.prepared.clone();
        let prepared = tokio::task::spawn_blocking(move || read())
            .await
            .map_err(|source| SandboxError::Task {
                claim: format!("pod {}: reading the prepared claims", pod.name),
                source,
            })??;
        let functions: Vec<PodFunction> = of_pod(&prepared, &pod.uid)
            .into_iter()
            .filter(|f| {
                let attached = f.network.is_some() || f.direct.is_some();
                if !attached {
                    tracing::debug!(pod = %pod.name, pci = %f.pci, "neither netAttachDefName nor a NetworkConfig: the netdev stays on the host");
                }
                attached
            })
            .collect();
        if functions.is_empty() {
            return Ok(Vec::new());
        }
        // Under the sandbox's lock, before anything is attached (see [`Sandboxes`]).
        self.sandboxes.start(&pod.id);
        let netns = netns_of(pod).ok_or_else(|| {
            self.sandboxes.forget(&pod.id);
            SandboxError::NoNetns {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            }
        })?;
        let mut done: Vec<Made> = Vec::new();
        let mut made = Vec::new();
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (k, function) in functions.iter().enumerate() {
            let attached = match &function.direct {
                Some(config) => self
                    .attach_direct(pod, &netns, function, config, &mut used)
                    .await
                    .map(|(moved, data)| (Made::Direct(moved), data)),
                None => self
                    .attach(pod, &netns, function, k, &mut used)
                    .await
                    .map(|(entry, data)| (Made::Cni(entry), data)),
            };
            match attached {
                Ok((attachment, data)) => {
                    let name = match &attachment {
                        Made::Cni(entry) => entry.if_name.clone(),
                        Made::Direct(moved) => moved.saved.pod_name.clone(),
                    };
                    made.push((function.device.clone(), name));
                    self.write_status(function, &data);
                    done.push(attachment);
                }
                Err(error) => {
                    // All or nothing: what this sandbox got so far goes back.
                    let mut failures = self.undo(done).await;
                    self.sandboxes.forget(&pod.id);
                    // What could not be undone (or a failed attach kept) is tried again: the
                    // runtime fails the sandbox, and may never send its stop. So is a sandbox
                    // whose state could not be listed: it may have some.
                    let left = match self.has_state(&pod.id).await {
                        Ok(false) => false,
                        Ok(true) => {
                            if failures.is_empty() {
                                failures.push("state left by the failed start".to_owned());
                            }
                            true
                        }
                        Err(unlisted) => {
                            failures.push(unlisted);
                            true
                        }
                    };
                    if left {
                        let noted = self.sandboxes.torn_down(&pod.id, &failures);
                        log_failed(
                            &pod.id,
                            Some(&pod.name),
                            "a failed sandbox's network functions could not all be undone",
                            noted,
                            &failures,
                        );
                    }
                    return Err(error);
                }
            }
        }
        tracing::info!(pod = %pod.name, interfaces = ?made, "pod network functions attached");
        Ok(made)
    }

    /// Undoes the attachments of a sandbox that failed, last first; returns what failed.
    async fn undo(&self, done: Vec<Made>) -> Vec<String> {
        let mut failures = Vec::new();
        for attachment in done.into_iter().rev() {
            let error = match attachment {
                Made::Cni(entry) => {
                    let cni = self.cni.clone();
                    match tokio::task::spawn_blocking(move || cni.del(&entry)).await {
                        Ok(Err(e)) => Some(e.to_string()),
                        Ok(Ok(())) => None,
                        Err(e) => Some(e.to_string()),
                    }
                }
                Made::Direct(moved) => self
                    .direct
                    .move_back(moved)
                    .await
                    .err()
                    .map(|e| e.to_string()),
            };
            if let Some(error) = error {
                tracing::warn!(%error, "undoing an attachment of a failed sandbox");
                failures.push(error);
            }
        }
        failures
    }

    async fn attach(
        &self,
        pod: &api::PodSandbox,
        netns: &std::path::Path,
        function: &PodFunction,
        k: usize,
        used: &mut BTreeSet<String>,
    ) -> Result<(cni::Entry, cni::NetworkData), SandboxError> {
        let what = function.describe();
        let (namespace, name) = function.network.clone().unwrap_or_default();
        let if_name = function
            .if_name
            .clone()
            .unwrap_or_else(|| format!("net{}", k + 1));
        if !used.insert(if_name.clone()) {
            return Err(SandboxError::NameUsedTwice {
                claim: what,
                field: "VfConfig.ifName",
                if_name,
            });
        }
        let list = (self.nads)(namespace.clone(), name.clone())
            .await
            .map_err(|source| SandboxError::Nad {
                claim: what.clone(),
                source,
            })?;
        let claim = &function.claim;
        let at = Attachment {
            container_id: pod.id.clone(),
            netns: netns.to_owned(),
            if_name,
            device_id: Some(function.pci.clone()),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
                ("K8S_POD_NAME".into(), pod.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), pod.id.clone()),
                ("K8S_POD_UID".into(), pod.uid.clone()),
            ],
            labels: [
                ("claimUid".to_owned(), claim.uid.clone()),
                (
                    "claim".to_owned(),
                    format!("{}/{}", claim.namespace, claim.name),
                ),
                ("device".to_owned(), function.device.clone()),
            ]
            .into(),
        };
        let cni = self.cni.clone();
        let added = tokio::task::spawn_blocking(move || {
            let added = cni.add(&list, &at)?;
            // Its own cache entry, by name (not a listing of the cache, which the cleanup after a
            // Synchronize may be reading).
            let name = cni::cache::file_name(&list.name, &at.container_id, &at.if_name);
            let entry = cni::cache::load(&cni.cache_dir.join(name))?;
            Ok::<_, cni::CniError>((entry, added.network))
        })
        .await
        .map_err(|source| SandboxError::Task {
            claim: what.clone(),
            source,
        })?;
        added.map_err(|source| SandboxError::Cni {
            claim: what,
            network: format!("{namespace}/{name}"),
            source,
        })
    }

    /// Writes `data` as the `networkData` of `function` to its claim's status, in a task of its own:
    /// the write (a read and a server-side apply of the claim, each allowed 20 s) never holds up the
    /// `RunPodSandbox` answer, which the runtime waits for only `plugin_request_timeout` (2 s by
    /// default in containerd, which drops a plugin that runs past it). The claims source orders
    /// the status writes of one claim (the preparer's and these: a lock per claim), so neither undoes
    /// the other's entries. A failure is logged, as the write is not the sandbox's: its functions
    /// are in.
    fn write_status(&self, function: &PodFunction, data: &cni::NetworkData) {
        let Some(claims) = self.claims.clone() else {
            return;
        };
        if function.device.is_empty() {
            return;
        }
        let (claim, device, data) = (
            function.claim.clone(),
            function.device.clone(),
            data.clone(),
        );
        let driver = self.driver.clone();
        tokio::spawn(async move {
            let written = crate::podnet::status::write_network_data(
                claims.as_ref(),
                &claim,
                &driver,
                &device,
                &data,
            );
            if let Err(error) = written.await {
                tracing::warn!(claim = %claim.uid, %device, %error, "networkData not written to the claim's status");
            }
        });
    }

    /// `DEL` for every cached attachment of the sandbox, and its direct-mode netdevs home. One that
    /// fails is also tried again ([`PodNetwork::retry_teardowns`]) until it succeeds, the sandbox
    /// runs again, or its removal's teardown succeeds.
    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), SandboxError> {
        let _sandbox = self.sandboxes.lock(&pod.id).await;
        let failures = self.teardown_locked(&pod.id).await.failures();
        self.sandboxes.forget(&pod.id);
        let noted = self.sandboxes.torn_down(&pod.id, &failures);
        match failures.is_empty() {
            true => Ok(()),
            false => {
                log_failed(
                    &pod.id,
                    Some(&pod.name),
                    "pod network teardown failed",
                    noted,
                    &failures,
                );
                Err(SandboxError::Teardown { failures })
            }
        }
    }

    /// Whether anything of the sandbox `id` is recorded: a CNI cache entry or a direct-mode state
    /// file (unreadable ones named after it included). A listing that failed (or did not run) is an
    /// error, never "nothing": something may be left, which the retry finds out.
    async fn has_state(&self, id: &str) -> Result<bool, String> {
        let net = self.clone();
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || {
            let (named, prefix) = (format!("-{id}-"), format!("{id}-"));
            let cni = net
                .cni
                .cached()
                .map_err(|e| format!("{CNI_UNLISTED}: {e}"))?
                .into_iter()
                .any(|(name, entry)| match entry {
                    Ok(entry) => entry.container_id == id,
                    Err(_) => name.contains(&named),
                });
            let direct = || -> Result<bool, String> {
                let moved = net
                    .direct
                    .moved()
                    .map_err(|e| format!("{}: {e}", direct::STATE_UNLISTED))?;
                Ok(moved.into_iter().any(|(name, entry)| match entry {
                    Ok(moved) => moved.sandbox == id,
                    Err(_) => name.starts_with(&prefix),
                }))
            };
            Ok(cni || direct()?)
        })
        .await
        .unwrap_or_else(|e| Err(format!("listing the state of the sandbox: {e}")))
    }

    /// Tears down what the sandbox `id` got, under its lock: `DEL` for every cached CNI attachment,
    /// every direct-mode netdev moved back (a netdev gone with its namespace is reported and
    /// forgotten).
    pub async fn teardown(&self, id: &str) -> Teardown {
        let _sandbox = self.sandboxes.lock(id).await;
        self.teardown_locked(id).await
    }

    /// [`PodNetwork::teardown`] of a sandbox found vanished, unless it got network functions after
    /// `mark` (then `None`): a sandbox the runtime started after its `Synchronize`.
    async fn teardown_vanished(&self, id: &str, mark: SyncMark) -> Option<Teardown> {
        let _sandbox = self.sandboxes.lock(id).await;
        if self.sandboxes.started_after(id, mark) {
            return None;
        }
        let done = self.teardown_locked(id).await;
        self.sandboxes.forget(id);
        // Its failures are logged by the caller, at every `Synchronize`.
        self.sandboxes.torn_down(id, &done.failures());
        Some(done)
    }

    /// The teardown of the sandbox `id`, its lock held. A state directory that cannot be listed
    /// is a failure of it ([`CNI_UNLISTED`], [`direct::STATE_UNLISTED`]), tried again like any.
    async fn teardown_locked(&self, id: &str) -> Teardown {
        let cni = self.cni.clone();
        let sandbox = id.to_owned();
        let cni = match tokio::task::spawn_blocking(move || cni.del_sandbox(&sandbox)).await {
            Ok(Ok(done)) => done,
            Ok(Err(unlisted)) => vec![(CNI_UNLISTED.to_owned(), Err(unlisted))],
            Err(e) => vec![(
                id.to_owned(),
                Err(cni::CniError::new(cni::CniErrorKind::Exec, e.to_string())),
            )],
        };
        let direct = self.direct.move_back_sandbox(id).await;
        Teardown { cni, direct }
    }

    /// After a `Synchronize` that named the sandboxes `alive` at `mark` (`Sandboxes::mark`, taken
    /// on the event loop), beside the event loop: lists the sandboxes that vanished
    /// ([`PodNetwork::vanished`], a blocking read of the state directory, on a blocking thread) and
    /// tears them down ([`PodNetwork::del_vanished`]). A state directory that cannot be listed
    /// never reads as "nothing vanished": the cleanup is tried again
    /// ([`PodNetwork::retry_teardowns`], on the schedule of a failed teardown) until a listing
    /// succeeds or a later `Synchronize`'s cleanup takes its place.
    pub async fn clean_up_vanished(&self, alive: BTreeSet<String>, mark: SyncMark) {
        let number = self.sandboxes.next_cleanup();
        self.clean_up(number, alive, mark).await;
    }

    /// The cleanup `number` after a `Synchronize` (its first try, or a try again): lists, tears
    /// down what it found, and notes (and logs) a listing that failed, for a try again.
    async fn clean_up(&self, number: u64, alive: BTreeSet<String>, mark: SyncMark) {
        let net = self.clone();
        let listed = alive.clone();
        let listing = move || {
            #[cfg(test)]
            net.sandboxes.wait_while_listing_held();
            net.vanished(&listed)
        };
        let (vanished, failures) = match tokio::task::spawn_blocking(listing).await {
            Ok(found) => found,
            Err(error) => (
                BTreeSet::new(),
                vec![format!("listing the state directories: {error}")],
            ),
        };
        // What was found goes now, even when another listing failed.
        self.del_vanished(vanished, mark).await;
        let Some(noted) = self
            .sandboxes
            .cleanup_listed(number, &alive, mark, &failures)
        else {
            return;
        };
        let tries = noted.tries;
        match noted.next {
            None if tries > 1 => tracing::info!(
                tries,
                "the state directories listed on retry: the sandboxes gone while the plugin was \
                 disconnected are torn down"
            ),
            None => {}
            Some(next) if noted.loud => tracing::warn!(
                ?failures,
                tries,
                "the state directories could not be listed after a Synchronize, so the sandboxes \
                 gone while the plugin was disconnected are not torn down yet ({tries} tries so \
                 far); trying again in {next:?}"
            ),
            Some(next) => tracing::debug!(
                ?failures,
                tries,
                "the state directories could not be listed after a Synchronize ({tries} tries so \
                 far); trying again in {next:?}"
            ),
        }
    }

    /// The sandboxes with CNI attachments or direct-mode netdevs that are not in `alive` (blocking:
    /// reads the state directory); unreadable entries are logged and kept. A sandbox started after
    /// the `Synchronize` may be among them: [`PodNetwork::del_vanished`] skips it. Also the
    /// listings that failed, one message each naming the directory (what such a directory holds is
    /// not known: none of it is among the sandboxes).
    pub fn vanished(&self, alive: &BTreeSet<String>) -> (BTreeSet<String>, Vec<String>) {
        let mut out = BTreeSet::new();
        let mut unlisted = Vec::new();
        let cached = self.cni.cached().unwrap_or_else(|error| {
            unlisted.push(format!("{CNI_UNLISTED}: {error}"));
            Vec::new()
        });
        for (name, entry) in cached {
            match entry {
                Ok(entry) if !alive.contains(&entry.container_id) => {
                    out.insert(entry.container_id);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(attachment = %name, %error, "unreadable CNI cache entry kept")
                }
            }
        }
        let moved = self.direct.moved().unwrap_or_else(|error| {
            unlisted.push(format!("{}: {error}", direct::STATE_UNLISTED));
            Vec::new()
        });
        for (name, entry) in moved {
            match entry {
                Ok(moved) if !alive.contains(&moved.sandbox) => {
                    out.insert(moved.sandbox);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(netdev = %name, %error, "unreadable direct-mode state kept")
                }
            }
        }
        (out, unlisted)
    }

    /// Tears down the sandboxes [`PodNetwork::vanished`] found, each under its lock (a stop event of
    /// the same sandbox meanwhile finds nothing left, or leaves nothing), except those that got
    /// network functions after `mark` (started after the `Synchronize`). One started before it,
    /// by this plugin over an earlier connection, is torn down: its stop was missed.
    pub async fn del_vanished(&self, sandboxes: BTreeSet<String>, mark: SyncMark) {
        for id in sandboxes {
            let Some(done) = self.teardown_vanished(&id, mark).await else {
                tracing::debug!(sandbox = %id, "started after the Synchronize: not torn down");
                continue;
            };
            for (name, result) in done.cni {
                match result {
                    Ok(()) => {
                        tracing::info!(attachment = %name, "CNI DEL for a sandbox gone while the plugin was down")
                    }
                    Err(error) => {
                        tracing::warn!(attachment = %name, %error, "CNI DEL of a vanished sandbox failed")
                    }
                }
            }
            for (name, result) in done.direct {
                if let Err(error) = result {
                    tracing::warn!(netdev = %name, %error, "a vanished sandbox's netdev could not be moved back");
                }
            }
        }
    }

    /// Until `ended` is dropped or sent (its connection ended): tries again the teardowns that
    /// failed (and the cleanup after a `Synchronize` whose listing failed), each when due ([`PodNetwork::retry_failed_teardowns`]; [`TEARDOWN_RETRY`] after it
    /// failed, then twice as long after each try that fails, up to [`TEARDOWN_RETRY_MAX`]). It wakes
    /// when the first is due, and at least every [`TEARDOWN_RETRY`] (tests:
    /// `Sandboxes::retrying_every`) for those failed since, the first time one period from now (the
    /// cleanup after the connection's `Synchronize` goes first). The failed teardowns outlive the
    /// connection: the next connection's task tries them. A round under way when `ended` comes
    /// finishes first: a teardown is never cut off between its `DEL` and the cache entry's removal,
    /// or while its lock is held.
    pub async fn retry_teardowns(&self, mut ended: tokio::sync::oneshot::Receiver<()>) {
        let every = self.sandboxes.retry_every;
        let mut wake = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                // Ended first: no round starts once the connection is over.
                biased;
                _ = &mut ended => return,
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.retry_failed_teardowns().await;
            // A teardown failed from now on is due `every` from now at the soonest: waking every
            // `every` finds it in time.
            let now = tokio::time::Instant::now();
            wake = self
                .sandboxes
                .next_due()
                .map_or(now + every, |due| due.clamp(now, now + every));
        }
    }

    /// One round of [`PodNetwork::retry_teardowns`]: the cleanup after a `Synchronize` whose listing
    /// failed, when due ([`PodNetwork::clean_up_vanished`]); then tears down again, each under its
    /// lock, every sandbox whose teardown failed and whose next try is due, unless it ran again, was
    /// torn down or tried since (by a stop, a `Synchronize`'s cleanup, or the round of an earlier
    /// connection's task). One that succeeds is forgotten; one that fails again is kept, its next try after twice
    /// the wait, logged at WARN on tries 1, 2, 4, 8, ... or when what failed changed, at DEBUG
    /// otherwise.
    pub async fn retry_failed_teardowns(&self) {
        let now = tokio::time::Instant::now();
        if let Some((number, alive, mark)) = self.sandboxes.due_cleanup(now) {
            self.clean_up(number, alive, mark).await;
        }
        for id in self.sandboxes.due_teardowns(now) {
            let _sandbox = self.sandboxes.lock(&id).await;
            // Under its lock: a RunPodSandbox or a teardown meanwhile took it out or put it off.
            if !self.sandboxes.due(&id, now) {
                continue;
            }
            if self.sandboxes.started().contains_key(&id) {
                // Alive again (cannot happen: its start took it out): never torn down here.
                self.sandboxes.started_again(&id);
                continue;
            }
            let done = self.teardown_locked(&id).await;
            let failures = done.failures();
            let noted = self.sandboxes.torn_down(&id, &failures);
            if failures.is_empty() {
                tracing::info!(sandbox = %id, tries = noted.tries, attachments = done.cni.len(),
                    netdevs = done.direct.len(), "a failed pod network teardown done on retry");
            } else {
                log_failed(
                    &id,
                    None,
                    "pod network teardown failed again",
                    noted,
                    &failures,
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests_direct;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_retry;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_status;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_sync;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_unlisted;
