//! A subset of the CRI v1 `RuntimeService` (package `runtime.v1`), written here with upstream's
//! message and field numbers from kubernetes/cri-api `pkg/apis/runtime/v1/api.proto`: what the kubelet
//! sends to run a pod, create a container with CDI devices, exec in it, and stop and remove both.

use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::transport::Channel;

/// `NamespaceMode.POD`: the pod's own namespace (network: set up by containerd's CNI).
pub const POD_NAMESPACE: i32 = 0;
/// `NamespaceMode.NODE`: the pod uses the host's namespace (host network: no CNI needed).
pub const NODE_NAMESPACE: i32 = 2;
/// `NamespaceMode.CONTAINER`.
pub const CONTAINER_NAMESPACE: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    #[prost(string, tag = "1")]
    pub version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub uid: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(uint32, tag = "4")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceOption {
    #[prost(int32, tag = "1")]
    pub network: i32,
    #[prost(int32, tag = "2")]
    pub pid: i32,
    #[prost(int32, tag = "3")]
    pub ipc: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxSandboxSecurityContext {
    #[prost(message, optional, tag = "1")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxPodSandboxConfig {
    #[prost(string, tag = "1")]
    pub cgroup_parent: String,
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxSandboxSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<PodSandboxMetadata>,
    #[prost(string, tag = "2")]
    pub hostname: String,
    #[prost(string, tag = "3")]
    pub log_directory: String,
    #[prost(message, optional, tag = "8")]
    pub linux: Option<LinuxPodSandboxConfig>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxRequest {
    #[prost(message, optional, tag = "1")]
    pub config: Option<PodSandboxConfig>,
    #[prost(string, tag = "2")]
    pub runtime_handler: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RunPodSandboxResponse {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

/// `StopPodSandboxRequest` and `RemovePodSandboxRequest` (the same single field).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PodSandboxIdRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerMetadata {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub attempt: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CdiDevice {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerSecurityContext {
    #[prost(message, optional, tag = "3")]
    pub namespace_options: Option<NamespaceOption>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LinuxContainerConfig {
    #[prost(message, optional, tag = "2")]
    pub security_context: Option<LinuxContainerSecurityContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerConfig {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<ContainerMetadata>,
    #[prost(message, optional, tag = "2")]
    pub image: Option<ImageSpec>,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub envs: Vec<KeyValue>,
    #[prost(string, tag = "11")]
    pub log_path: String,
    #[prost(message, optional, tag = "15")]
    pub linux: Option<LinuxContainerConfig>,
    #[prost(message, repeated, tag = "17")]
    pub cdi_devices: Vec<CdiDevice>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateContainerRequest {
    #[prost(string, tag = "1")]
    pub pod_sandbox_id: String,
    #[prost(message, optional, tag = "2")]
    pub config: Option<ContainerConfig>,
    #[prost(message, optional, tag = "3")]
    pub sandbox_config: Option<PodSandboxConfig>,
}

/// `CreateContainerResponse`; also `StartContainerRequest` and `RemoveContainerRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerId {
    #[prost(string, tag = "1")]
    pub container_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StopContainerRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(int64, tag = "2")]
    pub timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecSyncRequest {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, repeated, tag = "2")]
    pub cmd: Vec<String>,
    #[prost(int64, tag = "3")]
    pub timeout: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecSyncResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub stdout: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub stderr: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub exit_code: i32,
}

/// The deadline of every CRI call (the kubelet's `--runtime-request-timeout` is 2 minutes).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How many times a stop or removal was tried again (see [`Cri::remove_container`]).
pub static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The longest any CRI call took so far, in milliseconds.
pub static SLOWEST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A CRI client over containerd's socket.
#[derive(Clone)]
pub struct Cri {
    grpc: tonic::client::Grpc<Channel>,
}

/// What a CRI call failed with.
#[derive(Debug)]
pub enum CallError {
    Status(tonic::Status),
    Deadline(&'static str),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Status(status) => write!(f, "{}: {}", status.code(), status.message()),
            CallError::Deadline(method) => write!(f, "{method} ran past its deadline {DEADLINE:?}"),
        }
    }
}

impl Cri {
    pub fn new(channel: Channel) -> Cri {
        Cri {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    /// Calls `RuntimeService/<method>`, failing past [`DEADLINE`].
    pub async fn call<Q, A>(&self, method: &'static str, request: Q) -> Result<A, CallError>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        let call = async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let path = PathAndQuery::try_from(format!("/runtime.v1.RuntimeService/{method}"))
                .expect("a method name is a path");
            let codec = tonic_prost::ProstCodec::<Q, A>::default();
            grpc.unary(tonic::Request::new(request), path, codec).await
        };
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(DEADLINE, call).await;
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        SLOWEST_MS.fetch_max(took, std::sync::atomic::Ordering::Relaxed);
        match answer {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(CallError::Status(status)),
            Err(_) => Err(CallError::Deadline(method)),
        }
    }

    pub async fn version(&self) -> VersionResponse {
        self.call(
            "Version",
            VersionRequest {
                version: "v1".into(),
            },
        )
        .await
        .expect("Version")
    }

    /// Runs a pod: on the host network (no CNI), as the kubelet does for `hostNetwork: true`, or in
    /// its own network namespace (`Pod::own_network`, containerd's CNI).
    pub async fn run_pod(&self, pod: &Pod) -> Result<String, CallError> {
        let request = RunPodSandboxRequest {
            config: Some(sandbox_config(pod)),
            runtime_handler: String::new(),
        };
        let answer: RunPodSandboxResponse = self.call("RunPodSandbox", request).await?;
        Ok(answer.pod_sandbox_id)
    }

    /// Creates and starts `name` in the pod, running `command`, with `cdi` devices.
    pub async fn start_container(
        &self,
        pod: &Pod,
        name: &str,
        command: &[&str],
        cdi: &[String],
    ) -> Result<String, CallError> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: crate::runtime::IMAGE.into(),
            }),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            envs: vec![],
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces(pod)),
                }),
            }),
            cdi_devices: cdi
                .iter()
                .map(|name| CdiDevice { name: name.clone() })
                .collect(),
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config(pod)),
        };
        // containerd's CDI cache refreshes itself from inotify events, on a goroutine of its own
        // (container-device-interface `pkg/cdi/cache.go`: `InjectDevices` rescans only in manual
        // mode), so a spec written just before may not be known yet. The kubelet retries a failed
        // creation at the pod's next sync (`kuberuntime_manager.go` SyncPod, with back-off); so
        // does this, for that error only, for up to 5 s.
        let mut tries = 0;
        let created: ContainerId = loop {
            match self.call("CreateContainer", request.clone()).await {
                Err(CallError::Status(status))
                    if !cdi.is_empty()
                        && status.message().contains("unresolvable CDI devices")
                        && tries < 50 =>
                {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                done => break done?,
            }
        };
        if tries > 0 {
            eprintln!("CreateContainer {name}: CDI devices resolved after {tries} retries");
        }
        let _: Empty = self.call("StartContainer", created.clone()).await?;
        Ok(created.container_id)
    }

    /// Stops (SIGKILL at once) and removes a container.
    pub async fn remove_container(&self, id: &str) -> Result<(), CallError> {
        let stop = StopContainerRequest {
            container_id: id.into(),
            timeout: 0,
        };
        // containerd records a container's exit from the task's exit event, a moment after the
        // task is gone: a container exiting on its own meanwhile may refuse the kill (2.1: "ttrpc:
        // closed", its task's connection is closing) or the removal (1.7: "still running"). The
        // kubelet tries again at its next sync; here both are tried again for up to 10 s, and the
        // retries are counted.
        for _ in 0..100 {
            let stopped: Result<Empty, CallError> = self.call("StopContainer", stop.clone()).await;
            let result = match stopped {
                Ok(_) => self
                    .call::<_, Empty>(
                        "RemoveContainer",
                        ContainerId {
                            container_id: id.into(),
                        },
                    )
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Err(CallError::Status(status))
                    if status.message().contains("still running")
                        || status.message().contains("ttrpc: closed") =>
                {
                    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
        Err(CallError::Status(tonic::Status::deadline_exceeded(
            format!("container {id} not removed 10 s after StopContainer"),
        )))
    }

    /// Stops and removes a pod.
    pub async fn remove_pod(&self, pod: &Pod) -> Result<(), CallError> {
        self.stop_pod(pod).await?;
        let request = PodSandboxIdRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        let _: Empty = self.call("RemovePodSandbox", request).await?;
        Ok(())
    }

    /// Stops a pod (its containers and its sandbox; containerd tears its network down).
    pub async fn stop_pod(&self, pod: &Pod) -> Result<(), CallError> {
        let request = PodSandboxIdRequest {
            pod_sandbox_id: pod.id.clone(),
        };
        let _: Empty = self.call("StopPodSandbox", request).await?;
        Ok(())
    }

    /// Runs `cmd` in the container; its stdout, or an error with its exit code and stderr.
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Result<String, String> {
        let request = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            timeout: 30,
        };
        let answer: ExecSyncResponse = self
            .call("ExecSync", request)
            .await
            .map_err(|e| e.to_string())?;
        if answer.exit_code != 0 {
            return Err(format!(
                "exit {}: {}",
                answer.exit_code,
                String::from_utf8_lossy(&answer.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&answer.stdout).into_owned())
    }
}

/// A running pod sandbox.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub logs: String,
    /// The pod's cgroup (cgroupfs), as the kubelet's `kubepods/.../pod<uid>`.
    pub cgroup: String,
    /// Its own network namespace (containerd's CNI), else the host's network.
    pub own_network: bool,
}

/// The pod's network (the host's, or its own); the container's own PID namespace (its `/proc/1` is
/// its own process).
fn namespaces(pod: &Pod) -> NamespaceOption {
    NamespaceOption {
        network: if pod.own_network {
            POD_NAMESPACE
        } else {
            NODE_NAMESPACE
        },
        pid: CONTAINER_NAMESPACE,
        ipc: 0,
    }
}

fn sandbox_config(pod: &Pod) -> PodSandboxConfig {
    let (name, uid, logs) = (&pod.name, &pod.uid, &pod.logs);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // Host network: no UTS namespace of its own, so no hostname (runc refuses one).
        hostname: if pod.own_network {
            name.clone()
        } else {
            String::new()
        },
        log_directory: logs.clone(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: pod.cgroup.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(pod)),
            }),
        }),
    }
}
