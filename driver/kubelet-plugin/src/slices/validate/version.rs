//! The Kubernetes release a pool is checked for: where the API server's ResourceSlice rules differ
//! between releases (`k8s.io/api/resource/v1/types.go` and
//! `k8s.io/kubernetes/pkg/apis/resource/validation`, tags 1.34.0, 1.35.0, 1.36.0).

use std::fmt;

/// A Kubernetes release, `1.<minor>`, whose API server is to accept a pool. `resource.k8s.io/v1`
/// starts at 1.34, so an older minor is checked as 1.34. 1.36 and later have the rules of 1.35 for
/// what is checked here (1.36 adds rules for fields this crate does not publish: list-typed
/// attributes, node allocatable resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    minor: u32,
}

impl KubeVersion {
    /// Kubernetes 1.34: counter sets beside the devices that consume them, taint effects
    /// `NoSchedule` and `NoExecute`, at most 4 taints per device.
    pub const V1_34: KubeVersion = KubeVersion { minor: 34 };
    /// Kubernetes 1.35: counter sets in slices of their own, names unique in the pool; the taint
    /// effect `None` too; at most 16 taints per device.
    pub const V1_35: KubeVersion = KubeVersion { minor: 35 };
    /// Kubernetes 1.36: as 1.35 for what is checked here.
    pub const V1_36: KubeVersion = KubeVersion { minor: 36 };

    /// Kubernetes `1.<minor>`; below 34 it is 1.34, the first release with `resource.k8s.io/v1`.
    pub const fn minor(minor: u32) -> KubeVersion {
        KubeVersion {
            minor: if minor < 34 { 34 } else { minor },
        }
    }

    /// The minor version.
    pub const fn minor_version(self) -> u32 {
        self.minor
    }

    /// Counter sets in slices of their own (no `devices` there), referenced across the pool: from
    /// 1.35. Before, a slice's devices consume only the sets of that slice.
    pub const fn counter_sets_in_own_slices(self) -> bool {
        self.minor >= 35
    }

    /// `DeviceTaintsMaxLength`: 4 in 1.34, 16 from 1.35.
    pub const fn max_taints_per_device(self) -> usize {
        if self.minor >= 35 { 16 } else { 4 }
    }

    /// The taint effects the API server accepts (`validDeviceTaintEffects`): `None` from 1.35.
    pub const fn taint_effects(self) -> &'static [&'static str] {
        if self.minor >= 35 {
            &["NoExecute", "NoSchedule", "None"]
        } else {
            &["NoExecute", "NoSchedule"]
        }
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}
