//! Pod networking on the runtime's pod sandbox events: at `RunPodSandbox`, every network function of
//! a prepared claim reserved for the pod whose `VfConfig` names a NetworkAttachmentDefinition is
//! attached in CNI mode ([`crate::podnet::cni`]) into the sandbox's network namespace, and its
//! `networkData` written to the claim's status; an error fails the sandbox with a message naming the
//! claim, the device and the field. At `StopPodSandbox` and `RemovePodSandbox` the cached attachments
//! of the sandbox get their `DEL`; after each `Synchronize`, those of sandboxes the runtime no longer
//! has (gone while the plugin was down).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use prost::Message as _;

use super::endpoint::code;
use super::plugin::event;
use super::proto::api;
use super::proto::ttrpc::Status;
use crate::plugin::checkpoint::ClaimRecord;
use crate::plugin::prepare::ClaimSource;
use crate::podnet::cni::{self, Attachment, Cni, ConfList};
use crate::podnet::pods::{PodFunction, of_pod};

/// The prepared claims now (the checkpoint, read only).
pub type Prepared = Arc<dyn Fn() -> Result<BTreeMap<String, ClaimRecord>, String> + Send + Sync>;

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
    /// claims from the checkpoint at `checkpoint` (read only), NADs and status through `client`.
    pub fn for_plugin(
        args: &cni::CniArgs,
        state_dir: &std::path::Path,
        checkpoint: PathBuf,
        client: kube::Client,
        driver: &str,
        pool: &str,
    ) -> PodNetwork {
        let mut runtime = Cni::new(&args.cni_bin_dir, state_dir);
        runtime.timeout = std::time::Duration::from_secs(args.cni_timeout.max(1));
        PodNetwork {
            cni: runtime,
            prepared: Arc::new(move || crate::podnet::pods::read_prepared(&checkpoint)),
            nads: kube_nads(client.clone()),
            claims: Some(Arc::new(crate::plugin::prepare::KubeClaims(client))),
            driver: driver.to_owned(),
            pool: pool.to_owned(),
        }
    }

    /// Answers a `StateChange` of a pod sandbox event; `None` for any other (the CPU policy's).
    pub async fn on_state_change(&self, payload: &[u8]) -> Option<Result<Vec<u8>, Status>> {
        let request = api::StateChangeEvent::decode(payload).ok()?;
        let pod = request.pod.unwrap_or_default();
        let result = match request.event {
            event::RUN_POD_SANDBOX => self.run_pod_sandbox(&pod).await.map(|_| ()),
            event::STOP_POD_SANDBOX | event::REMOVE_POD_SANDBOX => {
                self.stop_pod_sandbox(&pod).await
            }
            _ => return None,
        };
        Some(
            result
                .map(|()| api::Empty {}.encode_to_vec())
                .map_err(|message| Status {
                    code: code::FAILED_PRECONDITION,
                    message,
                }),
        )
    }

    /// Attaches the pod's CNI-mode functions; returns the interfaces made (claim device, ifName).
    pub async fn run_pod_sandbox(
        &self,
        pod: &api::PodSandbox,
    ) -> Result<Vec<(String, String)>, String> {
        let prepared = (self.prepared)()?;
        let functions: Vec<PodFunction> = of_pod(&prepared, &pod.uid)
            .into_iter()
            .filter(|f| {
                if f.network.is_none() {
                    tracing::debug!(pod = %pod.name, pci = %f.pci, "no netAttachDefName: the netdev stays on the host");
                }
                f.network.is_some()
            })
            .collect();
        if functions.is_empty() {
            return Ok(Vec::new());
        }
        let netns = netns_of(pod).ok_or_else(|| {
            format!(
                "pod {}/{}: the sandbox has no network namespace (hostNetwork?), so its claims' \
                 VfConfig.netAttachDefName cannot be attached",
                pod.namespace, pod.name
            )
        })?;
        let mut done: Vec<cni::Entry> = Vec::new();
        let mut made = Vec::new();
        let mut used: BTreeSet<String> = BTreeSet::new();
        for (k, function) in functions.iter().enumerate() {
            match self.attach(pod, &netns, function, k, &mut used).await {
                Ok((entry, data)) => {
                    made.push((function.device.clone(), entry.if_name.clone()));
                    self.write_status(function, &data).await;
                    done.push(entry);
                }
                Err(message) => {
                    // All or nothing: what this sandbox got so far goes back.
                    for entry in done.into_iter().rev() {
                        let cni = self.cni.clone();
                        let undo = tokio::task::spawn_blocking(move || cni.del(&entry)).await;
                        if let Ok(Err(e)) = undo {
                            tracing::warn!(error = %e, "undoing an attachment of a failed sandbox");
                        }
                    }
                    return Err(message);
                }
            }
        }
        tracing::info!(pod = %pod.name, interfaces = ?made, "pod network functions attached (CNI)");
        Ok(made)
    }

    async fn attach(
        &self,
        pod: &api::PodSandbox,
        netns: &std::path::Path,
        function: &PodFunction,
        k: usize,
        used: &mut BTreeSet<String>,
    ) -> Result<(cni::Entry, cni::NetworkData), String> {
        let claim = &function.claim;
        let what = format!(
            "claim {}/{} device {} ({})",
            claim.namespace, claim.name, function.device, function.pci
        );
        let (namespace, name) = function.network.clone().unwrap_or_default();
        let if_name = function
            .if_name
            .clone()
            .unwrap_or_else(|| format!("net{}", k + 1));
        if !used.insert(if_name.clone()) {
            return Err(format!(
                "{what}: VfConfig.ifName {if_name:?} is used twice in the pod"
            ));
        }
        let list = (self.nads)(namespace.clone(), name.clone())
            .await
            .map_err(|e| format!("{what}: VfConfig.netAttachDefName: {e}"))?;
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
            let entry = cni
                .cached()
                .into_iter()
                .filter_map(|(_, e)| e.ok())
                .find(|e| e.container_id == at.container_id && e.if_name == at.if_name)
                .ok_or_else(|| {
                    cni::CniError::new(
                        cni::CniErrorKind::Cache,
                        "the attachment is not in the cache",
                    )
                })?;
            Ok::<_, cni::CniError>((entry, added.network))
        })
        .await
        .map_err(|e| format!("{what}: {e}"))?;
        added.map_err(|e| format!("{what}: network {namespace}/{name}: {e}"))
    }

    async fn write_status(&self, function: &PodFunction, data: &cni::NetworkData) {
        let Some(claims) = &self.claims else { return };
        if function.device.is_empty() {
            return;
        }
        if let Err(error) = crate::podnet::status::write_network_data(
            claims.as_ref(),
            &function.claim,
            &self.driver,
            &self.pool,
            &function.device,
            data,
        )
        .await
        {
            tracing::warn!(claim = %function.claim.uid, %error, "networkData not written to the claim's status");
        }
    }

    /// DEL for every cached attachment of the sandbox.
    pub async fn stop_pod_sandbox(&self, pod: &api::PodSandbox) -> Result<(), String> {
        let id = pod.id.clone();
        let cni = self.cni.clone();
        let failures = tokio::task::spawn_blocking(move || {
            cni.del_sandbox(&id)
                .into_iter()
                .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
        match failures.is_empty() {
            true => Ok(()),
            false => Err(failures.join("; ")),
        }
    }

    /// At a `Synchronize`: the cached attachments of sandboxes not in `alive`, listed before the answer
    /// (so a sandbox the runtime starts afterwards is never among them); unreadable entries are logged.
    pub fn vanished(&self, alive: &BTreeSet<String>) -> Vec<cni::Entry> {
        let mut out = Vec::new();
        for (name, entry) in self.cni.cached() {
            match entry {
                Ok(entry) if !alive.contains(&entry.container_id) => out.push(entry),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(attachment = %name, %error, "unreadable CNI cache entry kept")
                }
            }
        }
        out
    }

    /// DEL for attachments of vanished sandboxes ([`PodNetwork::vanished`]).
    pub async fn del_vanished(&self, entries: Vec<cni::Entry>) {
        let cni = self.cni.clone();
        let done = tokio::task::spawn_blocking(move || {
            entries
                .into_iter()
                .map(|e| (e.file_name(), cni.del(&e)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (name, result) in done {
            match result {
                Ok(()) => {
                    tracing::info!(attachment = %name, "CNI DEL for a sandbox gone while the plugin was down")
                }
                Err(error) => {
                    tracing::warn!(attachment = %name, %error, "CNI DEL of a vanished sandbox failed")
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
