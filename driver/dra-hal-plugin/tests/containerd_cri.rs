//! The real `dra-hal-plugin` binary with a real containerd (Debian's 1.7.x and 2.1.x, from
//! `scripts/containerd-fetch.sh`, selected with `DRA_HAL_CONTAINERD_BIN`), driven through CRI as the
//! kubelet drives it. The test is the kubelet: it registers the plugin (grpc-go's `:authority`),
//! prepares claims over the plugin's socket (`localhost`), passes the returned CDI ids to
//! `CreateContainer`, and reads each container's CPUs from its cgroup and `/proc/<pid>/status`.
//! Needs root and the unpacked containerd: `#[ignore]`, and named `..._needs_root_and_containerd`;
//! `.ci/run` runs them with `--ignored` once per containerd it fetched, with `DRA_HAL_CONTAINERD_BIN`
//! set, and skips them (`--skip _needs_root_and_containerd`) in its general `--ignored` run. Run
//! without `DRA_HAL_CONTAINERD_BIN`, they fail and say what to set: they never pass untested.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

#[path = "containerd_cri/cri.rs"]
mod cri;
#[path = "containerd_cri/kubelet.rs"]
mod kubelet;
#[path = "containerd_cri/podnet.rs"]
mod podnet;
#[path = "containerd_cri/runtime.rs"]
mod runtime;
#[path = "containerd_cri/watcher.rs"]
mod watcher;

use cri::Cri;
use kubelet::Node;

/// The container's CPUs as its exec'd process, its main process and its cgroup see them.
#[derive(Debug, PartialEq)]
struct Cpus {
    exec: String,
    main: String,
    cgroup: String,
}

impl Cpus {
    fn all(cpus: &str) -> Cpus {
        Cpus {
            exec: cpus.into(),
            main: cpus.into(),
            cgroup: cpus.into(),
        }
    }
}

async fn cpus(cri: &Cri, container: &str) -> Cpus {
    let script = "grep Cpus_allowed_list /proc/self/status; grep Cpus_allowed_list /proc/1/status; \
                  cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || \
                  cat /sys/fs/cgroup/cpuset.cpus.effective";
    let out = cri.exec(container, &["sh", "-c", script]).await.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let value = |line: &str| line.rsplit(['\t', ' ']).next().unwrap().trim().to_owned();
    Cpus {
        exec: value(lines[0]),
        main: value(lines[1]),
        cgroup: lines[2].trim().to_owned(),
    }
}

/// The plugin on the Xeon fixture with every CPU but 0 and 1 reserved (this machine has at least
/// those two), one device per CPU: a claim of `cpu-1` holds CPU 1, the shared pool is then CPU 0.
const XEON_TWO_CPUS: &[&str] = &[
    "--fixture",
    "xeon",
    "--cpu-mode",
    "individual",
    "--reserved-cpus",
    "2-223",
];

/// A claim container runs on exactly its CPUs, every other container on the shared pool, and the
/// pool moves when a claim is prepared (in the answer to the claim container's creation) and
/// unprepared (with the next container event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and containerd (DRA_HAL_CONTAINERD_BIN, scripts/containerd-fetch.sh)"]
async fn containerd_pins_claim_containers_and_moves_the_shared_pool_needs_root_and_containerd() {
    let node = Node::start(XEON_TWO_CPUS).await;
    let cri = &node.cri;
    let web = node.pod("web", "uid-web").await;
    let web_main = cri
        .start_container(&web, "main", &["sleep", "100000"], &[])
        .await
        .unwrap();
    assert_eq!(cpus(cri, &web_main).await, Cpus::all("0-1"));

    node.add_cpu_claim("pinned", "cpu-1", "uid-worker");
    let cdi = node.prepare("pinned").await;
    assert_eq!(cdi.len(), 1, "{cdi:?}");
    let worker = node.pod("worker", "uid-worker").await;
    let pinned = cri
        .start_container(&worker, "main", &["sleep", "100000"], &cdi)
        .await
        .unwrap();
    assert_eq!(cpus(cri, &pinned).await, Cpus::all("1"));
    // The answer to the claim container's creation moved the running shared container off CPU 1.
    assert_eq!(cpus(cri, &web_main).await, Cpus::all("0"));
    let env = cri.exec(&pinned, &["env"]).await.unwrap();
    assert!(env.contains("DRA_CPUSET_pinned=1"), "{env}");
    // A new shared container starts on the pool.
    let web_side = cri
        .start_container(&web, "side", &["sleep", "100000"], &[])
        .await
        .unwrap();
    assert_eq!(cpus(cri, &web_side).await, Cpus::all("0"));

    // The kubelet stops the claim's containers, then unprepares the claim; the freed CPU reaches the
    // shared containers with the next container event.
    cri.remove_container(&pinned).await.unwrap();
    cri.remove_pod(&worker).await.unwrap();
    node.unprepare("pinned").await;
    let probe = cri
        .start_container(&web, "probe", &["sleep", "100000"], &[])
        .await
        .unwrap();
    assert_eq!(cpus(cri, &probe).await, Cpus::all("0-1"));
    assert_eq!(cpus(cri, &web_main).await, Cpus::all("0-1"));
    assert_eq!(cpus(cri, &web_side).await, Cpus::all("0-1"));
    node.finish().await;
}

/// Churn: in each of 20 rounds, 8 shared containers are created, exit and are removed in parallel
/// while a claim is prepared, its container created (on exactly its CPU) and removed, and the claim
/// unprepared. No CRI call runs past its deadline (the deadlock of containerd #13733 would hang
/// every one), and the long-running shared container ends on the whole pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and containerd (DRA_HAL_CONTAINERD_BIN, scripts/containerd-fetch.sh)"]
async fn containerd_churn_while_claims_change_needs_root_and_containerd() {
    let node = Node::start(XEON_TWO_CPUS).await;
    let cri = &node.cri;
    let web = node.pod("web", "uid-web").await;
    let worker = node.pod("worker", "uid-worker").await;
    let web_main = cri
        .start_container(&web, "main", &["sleep", "100000"], &[])
        .await
        .unwrap();
    node.add_cpu_claim("churn", "cpu-1", "uid-worker");
    let started = std::time::Instant::now();
    for round in 0..20 {
        let mut churn = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (cri, web) = (cri.clone(), web.clone());
            churn.spawn(async move {
                let name = format!("churn-{round}-{i}");
                let id = cri.start_container(&web, &name, &["true"], &[]).await?;
                cri.remove_container(&id).await
            });
        }
        let cdi = node.prepare("churn").await;
        let pinned = cri
            .start_container(
                &worker,
                &format!("pinned-{round}"),
                &["sleep", "100000"],
                &cdi,
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(cpus(cri, &pinned).await, Cpus::all("1"), "round {round}");
        cri.remove_container(&pinned).await.unwrap();
        node.unprepare("churn").await;
        while let Some(result) = churn.join_next().await {
            result
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    eprintln!(
        "20 rounds of churn in {:?}; slowest CRI call {} ms (deadline {:?}); stops or removals \
         tried again: {}",
        started.elapsed(),
        cri::SLOWEST_MS.load(std::sync::atomic::Ordering::Relaxed),
        cri::DEADLINE,
        cri::RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );
    let probe = cri
        .start_container(&web, "probe", &["sleep", "100000"], &[])
        .await
        .unwrap();
    assert_eq!(cpus(cri, &probe).await, Cpus::all("0-1"));
    assert_eq!(cpus(cri, &web_main).await, Cpus::all("0-1"));
    node.finish().await;
}

/// The plugin killed with SIGKILL while a claim container runs, a shared container created while it
/// is down (on every CPU: no NRI plugin answers), the plugin started again: the runtime's
/// Synchronize moves that container to the pool, the claim container stays on its CPU (from the
/// checkpoint). The kubelet then wipes the node's slices, and they come back. containerd is killed
/// and started again: the plugin reconnects, and new containers and the unprepare move as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and containerd (DRA_HAL_CONTAINERD_BIN, scripts/containerd-fetch.sh)"]
async fn containerd_plugin_kill_and_runtime_restart_needs_root_and_containerd() {
    let mut node = Node::start(XEON_TWO_CPUS).await;
    let cri = node.cri.clone();
    let web = node.pod("web", "uid-web").await;
    let worker = node.pod("worker", "uid-worker").await;
    node.add_cpu_claim("kept", "cpu-1", "uid-worker");
    let cdi = node.prepare("kept").await;
    let pinned = cri
        .start_container(&worker, "main", &["sleep", "100000"], &cdi)
        .await
        .unwrap();
    assert_eq!(cpus(&cri, &pinned).await, Cpus::all("1"));

    node.kill_plugin();
    let orphan = cri
        .start_container(&web, "orphan", &["sleep", "100000"], &[])
        .await
        .unwrap();
    assert_eq!(cpus(&cri, &orphan).await, Cpus::all("0-1"));
    node.start_plugin().await;
    // Synchronize answers are applied as the plugin registers: poll briefly for the move.
    let mut moved = cpus(&cri, &orphan).await;
    for _ in 0..50 {
        if moved == Cpus::all("0") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        moved = cpus(&cri, &orphan).await;
    }
    assert_eq!(moved, Cpus::all("0"));
    assert_eq!(cpus(&cri, &pinned).await, Cpus::all("1"));
    // The kubelet prepares again after its own restart: the same devices.
    assert_eq!(node.prepare("kept").await, cdi);
    node.wipe_slices().await;

    node.restart_containerd().await;
    assert_eq!(cpus(&cri, &pinned).await, Cpus::all("1"));
    assert_eq!(cpus(&cri, &orphan).await, Cpus::all("0"));
    let later = cri
        .start_container(&web, "later", &["sleep", "100000"], &[])
        .await
        .unwrap();
    assert_eq!(cpus(&cri, &later).await, Cpus::all("0"));
    cri.remove_container(&pinned).await.unwrap();
    node.unprepare("kept").await;
    let probe = cri
        .start_container(&web, "probe", &["sleep", "100000"], &[])
        .await
        .unwrap();
    for id in [&probe, &later, &orphan] {
        assert_eq!(cpus(&cri, id).await, Cpus::all("0-1"));
    }
    node.finish().await;
}

/// A GPU + RDMA claim of the GB300 fixture with stand-in device nodes under `--dev-root`: the
/// container gets exactly its nodes (GPU 0 with the NVIDIA control nodes; mlx5_0's uverbs, umad,
/// issm and rdma_cm) and the claim's environment, through containerd's CDI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and containerd (DRA_HAL_CONTAINERD_BIN, scripts/containerd-fetch.sh)"]
async fn containerd_gives_a_gpu_and_rdma_claim_exactly_its_nodes_needs_root_and_containerd() {
    let dev_root = tempfile::tempdir().unwrap();
    let dev_root_arg = dev_root.path().to_str().unwrap().to_owned();
    let args = [
        "--fixture",
        "gb300",
        "--reserved-cpus",
        "2-127",
        "--dev-root",
        &dev_root_arg,
    ];
    let node = Node::start(&args).await;
    let cri = &node.cri;
    node.add_claim(
        "accel",
        &[("gpu", "gpu-0008-06-00-0"), ("nic", "rdma-0101-00-00-0")],
        "uid-trainer",
    );
    let cdi = node.prepare("accel").await;
    assert_eq!(
        cdi,
        [
            "hal.dra.dev/device=accel-gpu-0008-06-00-0",
            "hal.dra.dev/device=accel-rdma-0101-00-00-0"
        ]
    );
    node.make_device_nodes("accel", dev_root.path());
    let trainer = node.pod("trainer", "uid-trainer").await;
    let id = cri
        .start_container(&trainer, "main", &["sleep", "100000"], &cdi)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", node.containerd.log()));
    let script = "for n in $(ls /dev/infiniband); do echo /dev/infiniband/$n; done; \
                  for n in $(ls /dev | grep ^nvidia); do echo /dev/$n; done; env";
    let output = cri.exec(&id, &["sh", "-c", script]).await.unwrap();
    let mut nodes: Vec<&str> = output.lines().filter(|l| l.starts_with("/dev/")).collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        [
            "/dev/infiniband/issm0",
            "/dev/infiniband/rdma_cm",
            "/dev/infiniband/umad0",
            "/dev/infiniband/uverbs0",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia0",
            "/dev/nvidiactl",
        ],
        "{output}"
    );
    for variable in [
        "DRA_HAL_RDMA_DEVICE=mlx5_0",
        "NCCL_IB_HCA==mlx5_0",
        "GPU_DEVICE_0=gpu-0008-06-00-0",
        "NVIDIA_VISIBLE_DEVICES=GPU-",
        "DRA_HAL_CLAIM=default/claim-accel",
    ] {
        assert!(
            output.lines().any(|l| l.starts_with(variable)),
            "{variable} in {output}"
        );
    }
    // No CPU claim: the container runs on the shared pool.
    assert_eq!(cpus(cri, &id).await, Cpus::all("0-1"));
    cri.remove_container(&id).await.unwrap();
    node.unprepare("accel").await;
    node.finish().await;
}
