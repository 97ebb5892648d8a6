//! Direct mode at pod sandbox events: a function whose claim gives it a `NetworkConfig` has its
//! netdev moved from the host's network namespace into the sandbox's ([`crate::podnet::direct`]).
//! What moving it back needs is written ([`crate::podnet::moved`]) before it moves, and removed once
//! it is home or gone with its namespace: a plugin killed in between finds it at the next start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{PodNetwork, SandboxError, api};
use crate::podnet::cni::NetworkData;
use crate::podnet::config::{Checked, if_name_problem};
use crate::podnet::direct::{self, Detached};
use crate::podnet::error::{NetError, NetErrorKind};
use crate::podnet::moved::{self, MOVED_KIND, Moved};
use crate::podnet::pods::PodFunction;

/// How a teardown names the direct-mode state directory when it could not be listed.
pub const STATE_UNLISTED: &str = "direct-mode state";

/// Where direct mode moves netdevs from, and where it keeps their state.
#[derive(Debug, Clone)]
pub struct DirectMode {
    /// The host's network namespace (the plugin's own: `/proc/self/ns/net`).
    pub home: PathBuf,
    /// The state of the netdevs moved (`<plugin dir>/direct`).
    pub state_dir: PathBuf,
}

impl DirectMode {
    /// Netdevs moved from the plugin's own network namespace, their state under `state_root`.
    pub fn new(state_root: &Path) -> DirectMode {
        DirectMode {
            home: PathBuf::from("/proc/self/ns/net"),
            state_dir: moved::dir_under(state_root),
        }
    }

    /// The netdevs moved now, by state file name; an error when the state directory cannot be
    /// listed ([`moved::list`]).
    pub fn moved(&self) -> Result<moved::Listed, NetError> {
        moved::list(&self.state_dir)
    }

    /// Removes the temp files that writes of the state interrupted by a crash left
    /// ([`moved::remove_stale_temps`]); at start, before any netdev moves.
    pub fn remove_stale_temps(&self) -> std::io::Result<Vec<PathBuf>> {
        moved::remove_stale_temps(&self.state_dir)
    }

    /// Moves the netdev of `moved` home and forgets it: home, or gone with its namespace (reported).
    /// On failure the state stays, for the next try.
    fn move_back_blocking(&self, moved: &Moved) -> Result<Detached, NetError> {
        let name = moved.file_name();
        let detached = direct::detach(&self.home, &moved.saved)?;
        match detached {
            Detached::Home => tracing::info!(
                netdev = %moved.saved.host_name, sandbox = %moved.sandbox, claim = %moved.claim,
                "direct-mode netdev moved back to the host"
            ),
            Detached::Gone => tracing::warn!(
                netdev = %moved.saved.host_name, sandbox = %moved.sandbox, claim = %moved.claim,
                netns = %moved.saved.netns.display(),
                "direct-mode netdev gone with the namespace (a veth, or a function whose driver went): \
                 nothing to move back"
            ),
        }
        moved::remove(&self.state_dir, &name)?;
        Ok(detached)
    }

    /// [`DirectMode::move_back_blocking`] off the async threads (a failed task is a
    /// [`NetErrorKind::State`] error naming the netdev).
    pub(super) async fn move_back(&self, moved: Moved) -> Result<Detached, NetError> {
        let mode = self.clone();
        let netdev = moved.saved.host_name.clone();
        tokio::task::spawn_blocking(move || mode.move_back_blocking(&moved))
            .await
            .unwrap_or_else(|e| {
                let message = format!("moving {netdev} back: {e}");
                Err(NetError::new(NetErrorKind::State, &message))
            })
    }

    /// Moves back every netdev of the sandbox `id`, by state file name. A state directory that
    /// cannot be listed is one failure (named [`STATE_UNLISTED`]): what the sandbox has there is not
    /// known, so its teardown fails and is tried again.
    pub async fn move_back_sandbox(&self, id: &str) -> Vec<(String, Result<Detached, NetError>)> {
        let mode = self.clone();
        let sandbox = id.to_owned();
        let done = tokio::task::spawn_blocking(move || {
            let id = sandbox;
            let moved = match mode.moved() {
                Ok(moved) => moved,
                Err(error) => return vec![(STATE_UNLISTED.to_owned(), Err(error))],
            };
            moved
                .into_iter()
                .filter_map(|(name, entry)| match entry {
                    Ok(moved) if moved.sandbox == id => {
                        Some((name, mode.move_back_blocking(&moved)))
                    }
                    // A state file of this sandbox that cannot be read: its netdev may still be in
                    // the pod, which the stop must not hide.
                    Err(error) if name.starts_with(&format!("{id}-")) => Some((name, Err(error))),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .await;
        done.unwrap_or_else(|e| {
            let error = NetError::new(NetErrorKind::State, &e.to_string());
            vec![(format!("the state files of sandbox {id}"), Err(error))]
        })
    }

    /// Moves `host_name` into `netns` as `config` says, its state written first; on failure it is
    /// moved back and forgotten (kept when it could not be moved back, for the stop event).
    fn attach_blocking(
        &self,
        host_name: &str,
        netns: &Path,
        config: &Checked,
        rdma: Option<String>,
        entry_of: impl FnOnce(direct::Saved) -> Moved,
    ) -> Result<(Moved, NetworkData), NetError> {
        let mut saved = direct::survey(&self.home, host_name, netns, config)?;
        saved.rdma = rdma;
        let mut entry = entry_of(saved);
        moved::store(&self.state_dir, &entry)?;
        match direct::attach_surveyed(&self.home, &entry.saved, config) {
            Ok(attached) => {
                // Its index in the pod, known now (the kernel may have given it another than its
                // host index at the move).
                if attached.saved.index != entry.saved.index {
                    entry.saved.index = attached.saved.index;
                    if let Err(error) = moved::store(&self.state_dir, &entry) {
                        tracing::warn!(%error, netdev = host_name, "its index in the pod could not be recorded; it is told apart by its MAC and name");
                    }
                }
                let data = NetworkData {
                    interface_name: attached.saved.pod_name.clone(),
                    ips: attached.ips.iter().map(ToString::to_string).collect(),
                    hardware_address: attached.mac.clone(),
                };
                Ok((entry, data))
            }
            Err(error) => {
                if let Err(back) = self.move_back_blocking(&entry) {
                    tracing::error!(error = %back, netdev = host_name, "a failed attach could not be undone; kept for the sandbox's stop");
                }
                Err(error)
            }
        }
    }
}

impl PodNetwork {
    /// Attaches `function` in direct mode into `netns` with `config`; returns its state and what the
    /// pod's interface got.
    pub(super) async fn attach_direct(
        &self,
        pod: &api::PodSandbox,
        netns: &Path,
        function: &PodFunction,
        config: &Checked,
        used: &mut BTreeSet<String>,
    ) -> Result<(Moved, NetworkData), SandboxError> {
        let claim = &function.claim;
        let what = function.describe();
        let Some(host_name) = function.netdev.clone() else {
            return Err(SandboxError::NoNetdev { claim: what });
        };
        let pod_name = config.name.clone().unwrap_or_else(|| host_name.clone());
        if let Some(problem) = if_name_problem(&pod_name) {
            return Err(SandboxError::BadName {
                claim: what,
                if_name: pod_name,
                problem,
            });
        }
        if !used.insert(pod_name.clone()) {
            return Err(SandboxError::NameUsedTwice {
                claim: what,
                field: "NetworkConfig interface.name",
                if_name: pod_name,
            });
        }
        if !crate::podnet::cni::conf::is_container_id(&pod.id) {
            return Err(SandboxError::BadSandboxId {
                claim: what,
                id: pod.id.clone(),
            });
        }
        let mut config = config.clone();
        config.name = Some(pod_name);
        let (sandbox, owner) = (
            pod.id.clone(),
            format!("{}/{}", claim.namespace, claim.name),
        );
        let device = function.device.clone();
        let rdma = function.rdma.clone();
        let entry_of = move |saved| Moved {
            kind: MOVED_KIND.into(),
            sandbox,
            claim: owner,
            device,
            saved,
        };
        let mode = self.direct.clone();
        let netns = netns.to_owned();
        tokio::task::spawn_blocking(move || {
            mode.attach_blocking(&host_name, &netns, &config, rdma, entry_of)
        })
        .await
        .map_err(|source| SandboxError::Task {
            claim: what.clone(),
            source,
        })?
        .map_err(|source| SandboxError::Direct {
            claim: what,
            source,
        })
    }
}
