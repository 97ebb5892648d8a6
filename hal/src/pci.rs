//! PCI identities: [`PciAddress`] (`dddd:bb:dd.f`) and [`PcieRoot`] (`pciDDDD:BB`).

use std::fmt;
use std::str::FromStr;

use crate::error::ParseError;

/// A PCI function address. Formats as the kernel does: lower-case, domain at least 4 hex digits
/// (`0000:3b:00.0`, `10000:00:04.0` for 32-bit VMD/Hyper-V domains).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// Segment / domain (up to 32 bits).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// Builds an address, checking the device and function ranges.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Result<Self, ParseError> {
        if device > 31 || function > 7 {
            let text = format!("{domain:04x}:{bus:02x}:{device:02x}.{function}");
            return Err(ParseError::new(
                "PCI address",
                &text,
                "device must be <= 1f and function <= 7",
            ));
        }
        Ok(PciAddress {
            domain,
            bus,
            device,
            function,
        })
    }

    /// Parses `dddd:bb:dd.f`. Hex is case-insensitive; the domain may have 4 to 8 digits (NVML prints
    /// `00000000:3B:00.0`, the kernel `0000:3b:00.0` or `10000:00:04.0`).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let bad = |reason| ParseError::new("PCI address", text, reason);
        let (domain, rest) = text
            .split_once(':')
            .ok_or_else(|| bad("expected dddd:bb:dd.f"))?;
        let (bus, rest) = rest
            .split_once(':')
            .ok_or_else(|| bad("expected dddd:bb:dd.f"))?;
        let (device, function) = rest
            .split_once('.')
            .ok_or_else(|| bad("expected dddd:bb:dd.f"))?;
        if !(4..=8).contains(&domain.len()) {
            return Err(bad("domain must have 4 to 8 hex digits"));
        }
        if bus.len() != 2 || device.len() != 2 || function.len() != 1 {
            return Err(bad("bus and device must have 2 hex digits, function 1"));
        }
        let hex = |s: &str| -> Result<u32, ParseError> {
            if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("not hexadecimal"));
            }
            u32::from_str_radix(s, 16).map_err(|_| bad("not hexadecimal"))
        };
        let (domain, bus, device, function) =
            (hex(domain)?, hex(bus)?, hex(device)?, hex(function)?);
        PciAddress::new(domain, bus as u8, device as u8, function as u8)
            .map_err(|_| bad("device must be <= 1f and function <= 7"))
    }

    /// The root bus this function would hang under if it sat directly on a host bridge: `pciDDDD:BB`.
    /// The real root comes from the resolved sysfs path (see the sysfs backend); this is only the
    /// naming helper.
    pub fn bus_root(&self) -> PcieRoot {
        PcieRoot {
            domain: self.domain,
            bus: self.bus,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PciAddress({self})")
    }
}

impl FromStr for PciAddress {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PciAddress::parse(s)
    }
}

/// A PCIe root complex (host bridge) as Kubernetes names it: `pciDDDD:BB`, the directory under
/// `/sys/devices` that the device's path starts from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PcieRoot {
    /// PCI domain.
    pub domain: u32,
    /// Root bus number.
    pub bus: u8,
}

impl PcieRoot {
    /// Parses `pciDDDD:BB` (domain 4 to 8 hex digits, any case).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let bad = |reason| ParseError::new("PCIe root", text, reason);
        let rest = text
            .strip_prefix("pci")
            .ok_or_else(|| bad("expected pciDDDD:BB"))?;
        let (domain, bus) = rest
            .split_once(':')
            .ok_or_else(|| bad("expected pciDDDD:BB"))?;
        if !(4..=8).contains(&domain.len()) || bus.len() != 2 {
            return Err(bad("expected a 4 to 8 digit domain and a 2 digit bus"));
        }
        if !domain
            .bytes()
            .chain(bus.bytes())
            .all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad("not hexadecimal"));
        }
        let domain = u32::from_str_radix(domain, 16).map_err(|_| bad("not hexadecimal"))?;
        let bus = u8::from_str_radix(bus, 16).map_err(|_| bad("not hexadecimal"))?;
        Ok(PcieRoot { domain, bus })
    }
}

impl fmt::Display for PcieRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pci{:04x}:{:02x}", self.domain, self.bus)
    }
}

impl fmt::Debug for PcieRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PcieRoot({self})")
    }
}

impl FromStr for PcieRoot {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PcieRoot::parse(s)
    }
}

macro_rules! serde_via_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_via_string!(PciAddress);
serde_via_string!(PcieRoot);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_formats_kernel_addresses() {
        let a = PciAddress::parse("0000:3b:00.1").unwrap();
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 0x3b, 0, 1));
        assert_eq!(a.to_string(), "0000:3b:00.1");
        assert_eq!(
            PciAddress::parse("10000:00:04.0").unwrap().to_string(),
            "10000:00:04.0"
        );
        assert_eq!(
            PciAddress::parse("00000000:3B:00.0").unwrap().to_string(),
            "0000:3b:00.0"
        );
        assert_eq!(
            PciAddress::parse("0101:00:00.0")
                .unwrap()
                .bus_root()
                .to_string(),
            "pci0101:00"
        );
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "3b:00.0",
            "0000:3b:00",
            "0000:3b:20.0",
            "0000:3b:00.8",
            "000:3b:00.0",
            "0000:3g:00.0",
            "123456789:00:00.0",
            "0000:+3:00.0",
            "0000:3b:00.0 ",
        ] {
            assert!(PciAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pcie_roots() {
        assert_eq!(
            PcieRoot::parse("pci0000:00").unwrap().to_string(),
            "pci0000:00"
        );
        assert_eq!(
            PcieRoot::parse("pci10000:00").unwrap(),
            PcieRoot {
                domain: 0x10000,
                bus: 0
            }
        );
        for bad in [
            "pci0000",
            "0000:00",
            "pci00:00",
            "pci0000:0g",
            "pci0000:000",
        ] {
            assert!(PcieRoot::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn address_round_trips(domain in any::<u32>(), bus in any::<u8>(), device in 0u8..32, function in 0u8..8) {
            let a = PciAddress::new(domain, bus, device, function).unwrap();
            let text = a.to_string();
            prop_assert_eq!(text.clone(), text.to_lowercase());
            prop_assert_eq!(PciAddress::parse(&text).unwrap(), a);
            prop_assert_eq!(PciAddress::parse(&text.to_uppercase()).unwrap(), a);
        }

        #[test]
        fn root_round_trips(domain in any::<u32>(), bus in any::<u8>()) {
            let r = PcieRoot { domain, bus };
            prop_assert_eq!(PcieRoot::parse(&r.to_string()).unwrap(), r);
        }

        #[test]
        fn parsers_never_panic(text in "\\PC{0,24}") {
            let _ = PciAddress::parse(&text);
            let _ = PcieRoot::parse(&text);
        }
    }
}
