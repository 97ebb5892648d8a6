//! [`Publisher`]: keeps the node's pool of ResourceSlices in the API server equal to the inventory.
//!
//! * A rescan that finds the same devices makes no API call at all.
//! * When anything changes, the pool generation is bumped and every slice is written with it (the
//!   scheduler only trusts a pool whose slices all carry the highest generation); slices no longer
//!   needed are deleted afterwards, so the pool is never incomplete at its newest generation.
//! * On start, the slices already in the API server for this node and driver are adopted: if they hold
//!   exactly what would be published, nothing is written.
//! * Updates carry the `resourceVersion` read last; a conflict (someone else wrote the slice) re-reads
//!   it and retries. Every slice has the Node as its owner, so deleting the node deletes them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::ResourceSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::inventory::Inventory;
use crate::slices::validate::{SliceError, validate_pool};
use crate::slices::{SliceConfig, build_slices};

/// How often a write that conflicts is retried after re-reading the slice.
const CONFLICT_RETRIES: usize = 5;

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The slices would be rejected by the API server: a bug in the model, never sent.
    #[error("the slices break API rules: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<SliceError>),
    /// An API call failed.
    #[error("{op} {name}: {source}")]
    Api {
        /// What was being done (`create`, `update`, `delete`, `list`, `get`).
        op: &'static str,
        /// The slice (or node, or list selector) concerned.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
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

/// The pool as this process last wrote (or adopted) it.
struct Published {
    generation: i64,
    /// By name, with the `resourceVersion` the API server returned.
    slices: BTreeMap<String, ResourceSlice>,
}

/// Publishes one node's pool.
pub struct Publisher {
    slices: Api<ResourceSlice>,
    nodes: Api<Node>,
    config: SliceConfig,
    owner: Option<OwnerReference>,
    published: Option<Published>,
}

impl Publisher {
    /// A publisher for `config`'s node and driver.
    pub fn new(client: kube::Client, config: SliceConfig) -> Self {
        Publisher {
            slices: Api::all(client.clone()),
            nodes: Api::all(client),
            config,
            owner: None,
            published: None,
        }
    }

    /// Makes the API server hold exactly the slices of `inventory`.
    pub async fn publish(&mut self, inventory: &Inventory) -> Result<PublishReport, PublishError> {
        if self.owner.is_none() {
            self.owner = Some(self.node_owner().await?);
        }
        let desired = build_slices(inventory, &self.config, 0);
        let errors = validate_pool(&desired);
        if !errors.is_empty() {
            return Err(PublishError::Invalid(errors));
        }
        let published = match self.published.take() {
            Some(published) => published,
            None => self.adopt().await?,
        };
        let unchanged = |generation: i64| {
            desired.len() == published.slices.len()
                && desired.iter().all(|d| {
                    let name = d.metadata.name.as_deref().unwrap_or_default();
                    published.slices.get(name).is_some_and(|p| {
                        let mut want = d.spec.clone();
                        want.pool.generation = generation;
                        p.spec == want && p.metadata.owner_references == self.owner_list()
                    })
                })
        };
        if unchanged(published.generation) {
            let generation = published.generation;
            self.published = Some(published);
            return Ok(PublishReport {
                generation,
                ..Default::default()
            });
        }
        let generation = published.generation + 1;
        let mut report = PublishReport {
            generation,
            ..Default::default()
        };
        let mut written = BTreeMap::new();
        for mut slice in desired {
            slice.spec.pool.generation = generation;
            slice.metadata.owner_references = self.owner_list();
            let name = slice.metadata.name.clone().unwrap_or_default();
            let stored = match published.slices.get(&name) {
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
            written.insert(name, stored);
        }
        for name in published
            .slices
            .keys()
            .filter(|n| !written.contains_key(*n))
        {
            match self.slices.delete(name, &DeleteParams::default()).await {
                Ok(_) => report.deleted += 1,
                Err(e) if is_status(&e, 404) => {}
                Err(source) => {
                    return Err(PublishError::Api {
                        op: "delete",
                        name: name.clone(),
                        source,
                    });
                }
            }
        }
        self.published = Some(Published {
            generation,
            slices: written,
        });
        Ok(report)
    }

    /// The slices of this node and driver already in the API server, at their highest generation.
    async fn adopt(&self) -> Result<Published, PublishError> {
        let selector = format!(
            "spec.nodeName={},spec.driver={}",
            self.config.node_name, self.config.driver_name
        );
        let list = self
            .slices
            .list(&ListParams::default().fields(&selector))
            .await
            .map_err(|source| PublishError::Api {
                op: "list",
                name: selector.clone(),
                source,
            })?;
        let generation = list
            .items
            .iter()
            .map(|s| s.spec.pool.generation)
            .max()
            .unwrap_or(0);
        let slices = list
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
        Ok(Published { generation, slices })
    }

    /// The Node as controlling owner, so the slices go with it.
    async fn node_owner(&self) -> Result<OwnerReference, PublishError> {
        let node = self
            .nodes
            .get(&self.config.node_name)
            .await
            .map_err(|source| PublishError::Api {
                op: "get node",
                name: self.config.node_name.clone(),
                source,
            })?;
        Ok(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.config.node_name.clone(),
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
        match self.slices.create(&PostParams::default(), &slice).await {
            Ok(stored) => Ok(stored),
            // Written by an earlier run of this driver that this one did not see: take it over.
            Err(e) if is_status(&e, 409) => self.replace(name, slice).await,
            Err(source) => Err(PublishError::Api {
                op: "create",
                name: name.to_owned(),
                source,
            }),
        }
    }

    async fn replace(
        &self,
        name: &str,
        mut slice: ResourceSlice,
    ) -> Result<ResourceSlice, PublishError> {
        let api_error = |op, source| PublishError::Api {
            op,
            name: name.to_owned(),
            source,
        };
        for _ in 0..CONFLICT_RETRIES {
            if slice.metadata.resource_version.is_none() {
                let current = self
                    .slices
                    .get(name)
                    .await
                    .map_err(|e| api_error("get", e))?;
                slice.metadata.resource_version = current.metadata.resource_version;
            }
            match self
                .slices
                .replace(name, &PostParams::default(), &slice)
                .await
            {
                Ok(stored) => return Ok(stored),
                Err(e) if is_status(&e, 409) => slice.metadata.resource_version = None,
                Err(e) if is_status(&e, 404) => {
                    // Deleted meanwhile (by the garbage collector or an admin): create it again.
                    slice.metadata.resource_version = None;
                    return self
                        .slices
                        .create(&PostParams::default(), &slice)
                        .await
                        .map_err(|e| api_error("create", e));
                }
                Err(e) => return Err(api_error("update", e)),
            }
        }
        let message = format!("still conflicting after {CONFLICT_RETRIES} retries");
        Err(api_error("update", kube::Error::Service(message.into())))
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Keeps publishing until `shutdown` turns true: reads the inventory with `read` and publishes it at
/// start, every `interval`, and whenever `changed` is notified (the hotplug watcher's signal). A
/// failed publish is logged and retried at the next wake-up; an unchanged inventory costs no API call.
pub async fn publish_loop(
    mut publisher: Publisher,
    mut read: impl FnMut() -> Inventory,
    interval: std::time::Duration,
    changed: std::sync::Arc<tokio::sync::Notify>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let inventory = read();
        match publisher.publish(&inventory).await {
            Ok(report) if report.wrote() => tracing::info!(
                created = report.created,
                updated = report.updated,
                deleted = report.deleted,
                generation = report.generation,
                "published ResourceSlices"
            ),
            Ok(_) => tracing::debug!("inventory unchanged; nothing to publish"),
            Err(error) => tracing::warn!(%error, "publishing ResourceSlices failed; will retry"),
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = changed.notified() => {}
            _ = shutdown.changed() => return,
        }
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
