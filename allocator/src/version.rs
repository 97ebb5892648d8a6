//! The Kubernetes version whose scheduler explain imitates. Where versions allocate differently,
//! the rules of the version asked for apply.

/// A Kubernetes minor version with `resource.k8s.io/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubernetesVersion {
    /// 1.34: a slice may carry shared counters and the devices that consume them; a device can
    /// only consume counter sets of its own slice.
    V1_34,
    /// 1.35: shared counters in slices of their own (a slice with counters has no devices).
    V1_35,
    /// 1.36: as 1.35; the scheduler takes a slice with shared counters for counters only and
    /// ignores any devices in it.
    V1_36,
}

impl KubernetesVersion {
    /// The newest version explain knows: the default.
    pub const NEWEST: KubernetesVersion = KubernetesVersion::V1_36;

    /// Every version explain knows, oldest first.
    pub const ALL: [KubernetesVersion; 3] = [Self::V1_34, Self::V1_35, Self::V1_36];

    /// `1.36`, `v1.36`, `1.36.2` or `v1.36.0-rc.1` (what `kubectl version` prints).
    pub fn parse(text: &str) -> Result<KubernetesVersion, String> {
        let bare = text.trim().trim_start_matches('v');
        let mut parts = bare.splitn(3, '.');
        let known = Self::ALL
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let minor = match (parts.next(), parts.next()) {
            (Some("1"), Some(minor)) => minor,
            _ => {
                return Err(format!(
                    "Kubernetes version {text:?}: expected 1.MINOR ({known})"
                ));
            }
        };
        Self::ALL
            .into_iter()
            .find(|v| v.to_string().strip_prefix("1.") == Some(minor))
            .ok_or_else(|| format!("Kubernetes version {text:?}: explain knows {known}"))
    }

    /// Whether a slice carries counter sets for devices of its own (1.34), rather than counters
    /// alone (1.35 and later).
    pub fn counters_beside_devices(self) -> bool {
        self == KubernetesVersion::V1_34
    }
}

impl std::fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KubernetesVersion::V1_34 => "1.34",
            KubernetesVersion::V1_35 => "1.35",
            KubernetesVersion::V1_36 => "1.36",
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_kubectl_prints_them() {
        assert_eq!(
            KubernetesVersion::parse("1.34").unwrap(),
            KubernetesVersion::V1_34
        );
        assert_eq!(
            KubernetesVersion::parse("v1.35.2").unwrap(),
            KubernetesVersion::V1_35
        );
        assert_eq!(
            KubernetesVersion::parse("v1.36.0-rc.1").unwrap(),
            KubernetesVersion::V1_36
        );
        let error = KubernetesVersion::parse("1.33").unwrap_err();
        assert!(error.contains("explain knows 1.34, 1.35, 1.36"), "{error}");
        assert!(KubernetesVersion::parse("2.0").is_err());
        assert!(KubernetesVersion::parse("").is_err());
    }
}
