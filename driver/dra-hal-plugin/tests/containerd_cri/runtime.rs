//! A real containerd (Debian's 1.7.x or 2.1.x, unpacked by `scripts/containerd-fetch.sh`) with its own
//! root, state and sockets under a temporary directory: CRI, CDI from the plugin's `--cdi-root`, NRI
//! on its own socket, cgroupfs, and a busybox image built here and imported (no registry is
//! reachable), used both as the sandbox image and the workload image.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// The image the pods and containers run: busybox-static, built here.
pub const IMAGE: &str = "docker.io/library/dra-hal-busybox:1";

/// The directory with `containerd`, `ctr` and `containerd-shim-runc-v2`, from
/// `DRA_HAL_CONTAINERD_BIN`; `None` when it is not set ([`super::kubelet::Node::start`] fails the
/// test then). Set but unusable is a failure too.
pub fn bin_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("DRA_HAL_CONTAINERD_BIN")?);
    for tool in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        assert!(
            dir.join(tool).is_file(),
            "DRA_HAL_CONTAINERD_BIN={} has no {tool}: run scripts/containerd-fetch.sh",
            dir.display()
        );
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "DRA_HAL_CONTAINERD_BIN is set but this test is not root: containerd needs root"
    );
    Some(dir)
}

/// A containerd serving under `dir`.
pub struct Containerd {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub major: u32,
    /// The pods' own network (the CRI's CNI configuration).
    pub cni: PodCni,
    child: Option<Child>,
}

/// What pods that are not on the host network get from containerd's CNI: `eth0` on a bridge of
/// this containerd (no address on the host side, no gateway, no masquerading: the host's routes are
/// untouched), an address from `host-local` with its store under this containerd's directory, and
/// `lo` (containerd adds the reference `loopback` plugin itself). containerd needs `eth0` with an
/// address: a sandbox whose CNI result has none fails ("failed to find network info").
pub struct PodCni {
    /// The reference plugins (Debian's `/usr/lib/cni`, else `/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// The configuration directory (one conflist), under this containerd's directory.
    pub conf_dir: PathBuf,
    /// The bridge the pods' `eth0` ends are on: deleted with this containerd.
    pub bridge: String,
}

/// The reference CNI plugins' directory: `$CNI_BIN_DIR`, Debian's `/usr/lib/cni`, or `/opt/cni/bin`.
pub fn cni_bin_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("CNI_BIN_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")])
        .collect();
    candidates
        .iter()
        .find(|dir| {
            ["bridge", "host-local", "loopback", "host-device", "static"]
                .iter()
                .all(|p| dir.join(p).is_file())
        })
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "the CNI reference plugins are not in {candidates:?}: install Debian's \
                 containernetworking-plugins or set CNI_BIN_DIR"
            )
        })
}

/// Writes the pods' CNI configuration under `dir` (see [`PodCni`]).
fn pod_network(dir: &Path) -> PodCni {
    let conf_dir = dir.join("cni-conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    // Bridge names have at most 15 bytes; one per test process is enough (tests run one at a time).
    let bridge = format!("dhbr{}", std::process::id() % 10_000_000);
    let conf = json!({
        "cniVersion": "1.0.0", "name": "dra-hal-test-pods",
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false,
            "ipam": {"type": "host-local", "dataDir": dir.join("cni-ipam"),
                     "ranges": [[{"subnet": "10.251.0.0/24"}]]}
        }]
    });
    std::fs::write(conf_dir.join("10-pods.conflist"), conf.to_string()).unwrap();
    PodCni {
        bin_dir: cni_bin_dir(),
        conf_dir,
        bridge,
    }
}

impl Containerd {
    pub fn cri_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The cgroup every pod of this containerd goes under: `dra-hal-test-<directory name>`.
    pub fn cgroup_root(&self) -> String {
        let parent = self.dir.parent().unwrap_or(&self.dir);
        let name = parent.file_name().map(|n| n.to_string_lossy().into_owned());
        format!("dra-hal-test-{}", name.unwrap_or_default())
    }

    pub fn nri_socket(&self) -> PathBuf {
        self.dir.join("nri.sock")
    }

    /// Writes the configuration, starts containerd and imports the image.
    pub async fn start(bin: &Path, dir: &Path, cdi: &Path) -> Containerd {
        let version = output(Command::new(bin.join("containerd")).arg("--version"));
        let major = if version.contains(" 1.") { 1 } else { 2 };
        // runc from the system (bookworm's), or DRA_HAL_RUNC.
        let runc = std::env::var_os("DRA_HAL_RUNC").map_or_else(|| which("runc"), PathBuf::from);
        let cni = pod_network(dir);
        let config = config(major, dir, cdi, &runc, &cni);
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut containerd = Containerd {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            major,
            cni,
            child: None,
        };
        containerd.spawn().await;
        let image = build_image(dir);
        let ctr = || {
            let mut command = Command::new(bin.join("ctr"));
            command
                .arg("--address")
                .arg(containerd.cri_socket())
                .args(["-n", "k8s.io", "images"]);
            command
        };
        let imported = output(ctr().arg("import").arg(&image));
        // What the store holds, not ctr's progress text (once empty under load with 2.1).
        let listed = output(ctr().args(["ls", "-q"]));
        assert!(
            listed.lines().any(|l| l.ends_with("busybox:1")),
            "ctr import: {imported:?}; images: {listed:?}"
        );
        containerd
    }

    /// Starts the containerd process and waits for its socket.
    pub async fn spawn(&mut self) {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new(self.bin.join("containerd"))
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.cri_socket()).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd did not serve: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills containerd (SIGKILL; its shims and containers go on running) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    /// Kills every process in this containerd's pods' cgroups, then its shims, then containerd;
    /// removes the cgroups once empty and unmounts what containerd left mounted under its directory;
    /// the pods' network namespaces and libcni results, and the pods' bridge, go too.
    fn drop(&mut self) {
        let root = self.cgroup_root();
        // Three passes: a shim or container may be starting while the first one runs.
        let script = format!(
            "for i in 1 2 3; do \
               for f in $(find /sys/fs/cgroup -path '*/{root}/*' -name cgroup.procs); do \
                 for p in $(cat $f); do kill -9 $p; done; done; \
               for p in /proc/[0-9]*; do grep -qs -- '{socket}' $p/cmdline && \
                 grep -qs containerd-shim $p/cmdline && kill -9 ${{p#/proc/}}; done; \
               sleep 0.1; done; true",
            socket = self.cri_socket().display()
        );
        let kill_all = || {
            let _ = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .stderr(Stdio::null())
                .status();
        };
        // A test that failed leaves its pods running: their network namespaces (containerd's
        // `cni-*` mounts under /run/netns, the same inode as a pod process's ns/net) and libcni's
        // results of their sandboxes (named by the sandbox id, a cgroup of the pod) go first, so
        // that the namespaces die with the pods' processes.
        let networks = format!(
            "for f in $(find /sys/fs/cgroup -path '*/{root}/*' -name cgroup.procs); do \
               id=$(basename $(dirname $f)); rm -f /var/lib/cni/results/*-$id-*; \
               for p in $(cat $f); do ino=$(stat -L -c %i /proc/$p/ns/net); \
                 for n in /run/netns/cni-*; do \
                   [ \"$(stat -L -c %i $n)\" = \"$ino\" ] && umount $n && rm -f $n; \
                 done; done; done; true"
        );
        let _ = Command::new("sh")
            .arg("-c")
            .arg(networks)
            .stderr(Stdio::null())
            .status();
        kill_all();
        self.kill();
        kill_all();
        let rmdir = format!(
            "for i in $(seq 50); do find /sys/fs/cgroup -depth -type d -path '*/{root}*' \
               -exec rmdir {{}} + 2>/dev/null && break; sleep 0.1; done; true"
        );
        let _ = Command::new("sh").arg("-c").arg(rmdir).status();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|target| Path::new(target).starts_with(&self.dir))
            .collect();
        under.sort_unstable_by(|a, b| b.cmp(a));
        for target in under {
            let _ = Command::new("umount").args(["-l", target]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.cni.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

fn which(tool: &str) -> PathBuf {
    let found = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}")),
    );
    PathBuf::from(found.trim())
}

fn output(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// containerd's configuration: version 2 for 1.x, version 3 for 2.x.
fn config(major: u32, dir: &Path, cdi: &Path, runc: &Path, pod_cni: &PodCni) -> String {
    let (dir, cdi, runc) = (dir.display(), cdi.display(), runc.display());
    let cni = |section: &str| {
        format!(
            "[{section}.cni]\n  bin_dir = \"{}\"\n  conf_dir = \"{}\"\n",
            pod_cni.bin_dir.display(),
            pod_cni.conf_dir.display()
        )
    };
    // restrict_oom_score_adj: this machine refuses a sandbox's -998 without CAP_SYS_RESOURCE.
    let common = format!(
        "root = \"{dir}/root\"\nstate = \"{dir}/state\"\n\
         [grpc]\n  address = \"{dir}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{dir}/containerd.sock.ttrpc\"\n\
         [plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n  \
         socket_path = \"{dir}/nri.sock\"\n  plugin_path = \"{dir}/nri-plugins\"\n  \
         plugin_config_path = \"{dir}/nri-conf\"\n"
    );
    let runtimes = |section: &str| {
        format!(
            "[{section}.containerd]\n  default_runtime_name = \"runc\"\n\
             [{section}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{section}.containerd.runtimes.runc.options]\n  SystemdCgroup = false\n  \
             BinaryName = \"{runc}\"\n  Root = \"{dir}/runc\"\n"
        )
    };
    if major == 1 {
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        format!(
            "version = 2\n{common}[{cri}]\n  sandbox_image = \"{IMAGE}\"\n  restrict_oom_score_adj = true\n  enable_cdi = true\n  \
             cdi_spec_dirs = [\"{cdi}\"]\n  stream_server_port = \"0\"\n{}{}",
            cni(cri),
            runtimes(cri)
        )
    } else {
        let runtime = "plugins.\"io.containerd.cri.v1.runtime\"";
        format!(
            "version = 3\n{common}[plugins.\"io.containerd.grpc.v1.cri\"]\n  \
             stream_server_port = \"0\"\n\
             [plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = \"{IMAGE}\"\n\
             [{runtime}]\n  restrict_oom_score_adj = true\n  enable_cdi = true\n  cdi_spec_dirs = [\"{cdi}\"]\n{}{}",
            cni(runtime),
            runtimes(runtime)
        )
    }
}

/// An OCI image layout tarball: one layer with /bin/busybox and its applets as symlinks; the
/// default command sleeps (it is also the sandbox's "pause").
fn build_image(dir: &Path) -> PathBuf {
    let work = dir.join("image");
    let rootfs = work.join("rootfs");
    let blobs = work.join("layout/blobs/sha256");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    for empty in ["dev", "proc", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(empty)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "cat", "ls", "grep", "true", "env", "stat", "sort", "ip",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layer = work.join("layer.tar");
    output(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
            .arg(&rootfs)
            .arg("-cf")
            .arg(&layer)
            .arg("."),
    );
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let (layer_digest, layer_size) = blob(&blobs, &std::fs::read(&layer).unwrap());
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    });
    let (config_digest, config_size) = blob(&blobs, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = blob(&blobs, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "platform": {"architecture": arch, "os": "linux"},
                       "annotations": {"io.containerd.image.name": IMAGE,
                                       "org.opencontainers.image.ref.name": "1"}}]
    });
    let layout = work.join("layout");
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let tarball = work.join("image.tar");
    output(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tarball)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    tarball
}

/// Writes `data` as a blob; its digest and size.
fn blob(blobs: &Path, data: &[u8]) -> (String, usize) {
    let tmp = blobs.join("tmp");
    std::fs::write(&tmp, data).unwrap();
    let sum = output(Command::new("sha256sum").arg(&tmp));
    let hex = sum.split_whitespace().next().unwrap().to_owned();
    std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
    (format!("sha256:{hex}"), data.len())
}
