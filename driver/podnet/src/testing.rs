//! Helpers of the tests that need root (`_needs_root`, run with `--ignored` as root): named network
//! namespaces made with `ip netns`, veth pairs standing in for VF netdevs, and the CNI reference
//! plugins' directory. Behind the `testing` feature, for other crates' tests (the `driver`'s NRI
//! sandbox tests); they panic on any failure, as tests do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A named network namespace, deleted on drop.
pub struct Netns(
    /// Its name (`ip -n <name>`).
    pub String,
);

impl Netns {
    /// A new namespace `hal-<role>-<pid>-<n>` with `lo` up.
    pub fn new(role: &str) -> Netns {
        let name = format!(
            "hal-{role}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["netns", "add", &name]);
        sh(&["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// Its path (`/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }

    /// `ip -n <ns> -j <args>` as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-n", &self.0, "-j"];
        all.extend_from_slice(args);
        let out = Command::new("ip").args(&all).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The link `name` in this namespace, as `ip -j link show` has it.
    pub fn link(&self, name: &str) -> Option<serde_json::Value> {
        self.json(&["link", "show"])
            .as_array()?
            .iter()
            .find(|l| l["ifname"] == name)
            .cloned()
    }

    /// Deletes it now (a sandbox's namespace destroyed early); the drop's second try is quiet.
    pub fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Runs `ip <args>`; panics unless it succeeds.
pub fn sh(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// A veth pair `a`/`b` in `ns`, `a` with MTU 1500, up.
pub fn veth(ns: &Netns, a: &str, b: &str) {
    sh(&[
        "-n", &ns.0, "link", "add", a, "type", "veth", "peer", "name", b,
    ]);
    sh(&["-n", &ns.0, "link", "set", a, "up"]);
    sh(&["-n", &ns.0, "link", "set", b, "up"]);
}

static NEXT_VETH: AtomicUsize = AtomicUsize::new(0);

/// Where the reference plugins are: `$CNI_BIN_DIR`, else Debian's `/usr/lib/cni`, else `/opt/cni/bin`.
pub fn bin_dir() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("CNI_BIN_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")])
        .collect();
    for dir in &candidates {
        if ["host-device", "static", "tuning"]
            .iter()
            .all(|p| dir.join(p).is_file())
        {
            return dir.clone();
        }
    }
    panic!(
        "the CNI reference plugins host-device, static and tuning are not in {candidates:?}: \
         install Debian's containernetworking-plugins (apt-get install containernetworking-plugins) \
         or set CNI_BIN_DIR"
    );
}

/// A veth pair in the host namespace (`<a>` MTU `mtu`, up), deleted on drop if still there.
pub struct HostVeth(
    /// The name of its host end.
    pub String,
);

impl HostVeth {
    /// A new pair `hcv<pid>x<n>`/`hcv<pid>x<n>p`.
    pub fn new(mtu: u32) -> HostVeth {
        let n = NEXT_VETH.fetch_add(1, Ordering::Relaxed);
        let name = format!("hcv{}x{n}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        ip(&[
            "link",
            "add",
            &name,
            "mtu",
            &mtu.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        HostVeth(name)
    }

    /// The link as `ip -j link show` has it, if on the host.
    pub fn on_host(&self) -> Option<serde_json::Value> {
        let out = Command::new("ip")
            .args(["-j", "link", "show", "dev", &self.0])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get(0).cloned()
    }
}

impl Drop for HostVeth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}
