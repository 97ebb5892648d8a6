//! The real `dra-hal-plugin` binary in a container restricted as the Helm chart runs it with
//! `privileged: false` (`deployments/helm/dra-hal/templates/daemonset.yaml`): the container runtime's
//! default seccomp profile, no capabilities, root (uid and gid 0) without privilege escalation
//! (`no_new_privs`), a read-only root filesystem, the host's `/sys` read-only (its top mount: podman 4.3
//! has no recursive read-only bind mount, the chart's `recursiveReadOnly`), the host's network. The
//! runtime is podman with runc, the profile podman's default (containers-common's
//! `/usr/share/containers/seccomp.json`, derived from moby's default profile as containerd's and
//! CRI-O's `RuntimeDefault` are). The test plays the kubelet through the whole conversation of
//! `plugin_e2e`'s main test ([`common::kubelet_end_to_end`]: registration, slices, health, prepare and
//! unprepare of a GPU with an RDMA NIC, metrics, a hung API server, SIGTERM) and then finds no refused
//! call in the plugin's logs. With `--fixture` the plugin reads its sysfs from the fixture's tree, which
//! it writes to the container's `/dev/shm`, not from the host's `/sys`: the same calls (open, read,
//! getdents, statx, readlink) on another filesystem. Needs root, podman and runc: `#[ignore]`, run by
//! `.ci/run` with `--ignored`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

/// Podman's default seccomp profile. `DRA_HAL_SECCOMP_PROFILE` names another one (say, a copy whose
/// refusals are `SCMP_ACT_LOG`, to find in the kernel's log the calls the default one refuses).
const PROFILE: &str = "/usr/share/containers/seccomp.json";
const IMAGE: &str = "localhost/dra-hal-plugin-restricted:test";
/// The plugin's path in the image, as in the repository's `Dockerfile`.
const BINARY: &str = "/usr/local/bin/dra-hal-plugin";

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The files `ldd` lists for a binary: its shared libraries and the dynamic loader.
fn shared_libraries(ldd: &str) -> Vec<PathBuf> {
    assert!(!ldd.contains("not found"), "{ldd}");
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            path.filter(|p| p.starts_with('/')).map(PathBuf::from)
        })
        .collect()
}

/// An image of the test's own plugin binary (the one cargo built with the test features, for
/// `--fixture`), with the shared libraries and the loader `ldd` lists at their paths, imported into
/// podman from a tar of its root filesystem (no registry is needed).
fn plugin_image(work: &Path) -> &'static str {
    let binary = Path::new(env!("CARGO_BIN_EXE_dra-hal-plugin"));
    let rootfs = work.join("rootfs");
    for dir in ["dev", "proc", "sys", "tmp", "etc", "run", "usr/local/bin"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy(binary, rootfs.join(BINARY.trim_start_matches('/'))).unwrap();
    let libraries = shared_libraries(&run_ok("ldd", &[binary.to_str().unwrap()]));
    assert!(
        libraries
            .iter()
            .any(|l| l.to_string_lossy().contains("ld-linux")),
        "{libraries:?}"
    );
    for library in libraries {
        let to = rootfs.join(library.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // Follows the symbolic links (ld-linux-x86-64.so.2 -> ...): the file itself at the path the
        // binary names.
        std::fs::copy(&library, &to).unwrap();
    }
    let tar = work.join("rootfs.tar");
    let (rootfs, tar_path) = (rootfs.to_str().unwrap(), tar.to_str().unwrap());
    run_ok("tar", &["-C", rootfs, "-cf", tar_path, "."]);
    run_ok("podman", &["import", "-q", tar_path, IMAGE]);
    IMAGE
}

/// Removes the container (if a failed test left it running) and the image.
struct Cleanup<'a>(&'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for args in [&["rm", "-f", "-t", "0", self.0][..], &["rmi", "-f", IMAGE]] {
            let _ = Command::new("podman")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The restrictions as the kernel applies them to the container's process (the plugin, its PID 1):
/// a seccomp filter, `no_new_privs`, no capabilities at all, uid 0, and `/` and `/sys` read-only.
fn assert_restricted(container: &str) {
    let pid = run_ok(
        "podman",
        &["inspect", "--format", "{{.State.Pid}}", container],
    );
    let pid = pid.trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for line in [
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "Uid:\t0\t0\t0\t0",
        "Gid:\t0\t0\t0\t0",
    ] {
        assert!(status.lines().any(|l| l == line), "{line} in {status}");
    }
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    for mount_point in ["/", "/sys"] {
        // The last mount at that point is the one the process sees; its per-mount options are the
        // sixth field.
        let options = mountinfo
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|fields| fields[4] == mount_point)
            .map(|fields| fields[5].to_owned())
            .next_back()
            .unwrap_or_else(|| panic!("no {mount_point} in {mountinfo}"));
        assert!(
            options.split(',').any(|o| o == "ro"),
            "{mount_point}: {options}"
        );
    }
}

/// `--ulimit`s a container without capabilities can start with. A CRI runtime sets no limits (its
/// containers inherit the runtime's own); podman sets its defaults (1048576 open files, more processes
/// than its own limit of 32768), which runc cannot raise to once the capabilities are dropped. Open
/// files: this process's limits, as a container inherits the runtime's. Processes: 4096 (the limit
/// counts all of uid 0's threads on the host, a few hundred on a busy test machine).
fn limits() -> [String; 4] {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let value = |limit: Option<u64>| limit.map_or("-1".to_owned(), |n| n.to_string());
    [
        "--ulimit".to_owned(),
        format!("nofile={}:{}", value(limit.current), value(limit.maximum)),
        "--ulimit".to_owned(),
        "nproc=4096:4096".to_owned(),
    ]
}

/// Words of the errors a refused call leaves in a log line: EPERM, which the profiles return for the
/// calls they name (and containerd's and CRI-O's for every call they do not allow), ENOSYS, which
/// podman's returns for the calls it does not name, and EACCES and EROFS, from the lost capabilities
/// and the read-only filesystems.
const REFUSED: [&str; 9] = [
    "EPERM",
    "Operation not permitted",
    "(os error 1)",
    "ENOSYS",
    "Function not implemented",
    "(os error 38)",
    "Permission denied",
    "(os error 13)",
    "Read-only file system",
];

/// The chart's unprivileged container, as podman runs it: the plugin registers with the kubelet,
/// publishes its slice, prepares and unprepares a claim of a GPU and an RDMA NIC, answers metrics and
/// health, and exits cleanly at SIGTERM, with no call refused by the seccomp profile, the dropped
/// capabilities or the read-only filesystems. The test's directory (kubeconfig, kubelet and CDI
/// directories) is mounted at its own path, as the chart mounts the host's directories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, podman and runc (run by .ci/run)"]
async fn the_plugin_serves_the_kubelet_in_the_charts_unprivileged_container_needs_root() {
    assert!(rustix::process::geteuid().is_root(), "run as root");
    let profile = std::env::var("DRA_HAL_SECCOMP_PROFILE").unwrap_or_else(|_| PROFILE.into());
    assert!(
        Path::new(&profile).is_file(),
        "{profile}: no seccomp profile (podman's default comes with containers-common)"
    );
    eprintln!(
        "{} with runc {}, seccomp profile {profile}",
        run_ok("podman", &["--version"]).trim(),
        run_ok("runc", &["--version"]).lines().next().unwrap_or("?")
    );
    let work = tempfile::tempdir().unwrap();
    let name = format!("dra-hal-plugin-restricted-{}", std::process::id());
    let _cleanup = Cleanup(&name);
    let image = plugin_image(work.path());

    let stderr = common::kubelet_end_to_end(
        |dir| {
            let mut podman = Command::new("podman");
            podman
                .args(["--runtime", "runc", "--cgroup-manager=cgroupfs", "run"])
                .args(["--rm", "--name", &name])
                .args(["--security-opt", &format!("seccomp={profile}")])
                .args(["--security-opt", "no-new-privileges"])
                .args(["--cap-drop=ALL", "--user", "0:0", "--read-only"])
                .args(limits())
                // The chart's hostNetwork, and the test's API server on 127.0.0.1.
                .args(["--network", "host"])
                .arg("--volume")
                .arg(format!("{0}:{0}", dir.display()))
                .args(["--volume", "/sys:/sys:ro"])
                .args([image, BINARY]);
            podman
        },
        || assert_restricted(&name),
    )
    .await;
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|line| REFUSED.iter().any(|word| line.contains(word)))
        .collect();
    assert!(refused.is_empty(), "refused calls: {refused:#?}");
}
