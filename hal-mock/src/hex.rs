//! Hex ids in fixture descriptions (`"0x8086"`), as the kernel prints them.

fn parse(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u32::from_str_radix(digits, 16)
        .map_err(|_| format!("{text:?} is not a hex number like \"0x8086\""))
}

/// `"0x8086"` as a u16.
pub(crate) mod u16_hex {
    use serde::{Deserialize, Deserializer, de::Error};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let text = String::deserialize(d)?;
        let value = super::parse(&text).map_err(D::Error::custom)?;
        u16::try_from(value).map_err(|_| D::Error::custom(format!("{text:?} does not fit 16 bits")))
    }
}

/// `"0x020000"` as a u32.
pub(crate) mod u32_hex {
    use serde::{Deserialize, Deserializer, de::Error};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        super::parse(&text).map_err(D::Error::custom)
    }
}
