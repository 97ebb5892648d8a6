//! What direct mode applies to a pod's interface ([`Checked`]: name, addresses, MTU, routes, all
//! parsed), the [`Cidr`] it is written in, and the rules of an interface name ([`if_name_problem`]).
//! A driver decodes its own claim configuration into a [`Checked`] (the `driver` crate does it from
//! dranet's `NetworkConfig`, each problem naming its field).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address with its prefix length (`10.0.0.2/24`, `fd00::2/64`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// Why a text is not a [`Cidr`]; the message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| CidrError(format!("{text:?} is not a CIDR (address/prefix)")))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("{text:?}: {addr:?} is not an IP address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && !prefix.starts_with('+'))
            .ok_or_else(|| CidrError(format!("{text:?}: the prefix length must be 0 to {max}")))?;
        Ok(Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;
    fn try_from(text: String) -> Result<Cidr, CidrError> {
        text.parse()
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> String {
        cidr.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The configuration of a pod interface with everything parsed (what [`crate::direct::attach`]
/// applies).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// The name in the pod, when given.
    pub name: Option<String>,
    /// Addresses.
    pub addresses: Vec<Cidr>,
    /// MTU, when given.
    pub mtu: Option<u32>,
    /// Routes: destination, gateway.
    pub routes: Vec<(Cidr, Option<IpAddr>)>,
}

/// Why `name` is not an interface name (the kernel's rules: at most 15 bytes, no `/`, whitespace or
/// `:`; the `driver` checks `VfConfig.ifName` with them), or `None` when it is one.
pub fn if_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 15 {
        Some("is longer than 15 bytes (IFNAMSIZ)")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c == ':' || c.is_control())
    {
        Some("contains whitespace, ':' or a control character")
    } else {
        None
    }
}
