//! The network configuration of a NetworkAttachmentDefinition (`spec.config`, a JSON string): one
//! plugin's config or a conflist. Checked strictly where the runtime depends on it (`cniVersion`,
//! `name`, every plugin's `type`, which names a binary in the CNI bin directory); the rest of each
//! plugin's config belongs to the plugin and is passed through unchanged.

use serde_json::{Map, Value};

use super::error::CniError;

/// The CNI spec versions this runtime speaks (those of the reference plugins it is tested with).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0"];
/// The largest `spec.config` accepted.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// The most plugins in one conflist.
pub const MAX_PLUGINS: usize = 16;

/// A conflist (a single plugin's config becomes a list of one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfList {
    /// `cniVersion`.
    pub cni_version: String,
    /// `name`, the network's name.
    pub name: String,
    /// Each plugin's config, in the order ADD runs them.
    pub plugins: Vec<Map<String, Value>>,
}

impl ConfList {
    /// Parses `spec.config`; errors name the field (`spec.config.plugins[1].type`).
    pub fn parse(text: &str) -> Result<ConfList, CniError> {
        if text.trim().is_empty() {
            return Err(CniError::config(
                "spec.config",
                "is empty (a config from the node's CNI directory is not supported)",
            ));
        }
        if text.len() > MAX_CONFIG_BYTES {
            return Err(CniError::config(
                "spec.config",
                format!("is {} bytes, over {MAX_CONFIG_BYTES}", text.len()),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| CniError::config("spec.config", format!("is not JSON: {e}")))?;
        let Value::Object(top) = value else {
            return Err(CniError::config("spec.config", "is not a JSON object"));
        };
        let cni_version = string(&top, "cniVersion", "spec.config.cniVersion")?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::config(
                "spec.config.cniVersion",
                format!("{cni_version:?} is not one of {SUPPORTED_VERSIONS:?}"),
            ));
        }
        let name = string(&top, "name", "spec.config.name")?;
        if !is_network_name(&name) {
            return Err(CniError::config(
                "spec.config.name",
                format!("{name:?} is not a network name (letters, digits, '-', '_', '.')"),
            ));
        }
        let plugins = match top.get("plugins") {
            None => vec![top.clone()],
            Some(Value::Array(list)) => {
                if list.is_empty() || list.len() > MAX_PLUGINS {
                    return Err(CniError::config(
                        "spec.config.plugins",
                        format!("has {} plugins, not 1 to {MAX_PLUGINS}", list.len()),
                    ));
                }
                let mut plugins = Vec::new();
                for (i, plugin) in list.iter().enumerate() {
                    let Value::Object(plugin) = plugin else {
                        return Err(CniError::config(
                            &format!("spec.config.plugins[{i}]"),
                            "is not an object",
                        ));
                    };
                    plugins.push(plugin.clone());
                }
                plugins
            }
            Some(_) => {
                return Err(CniError::config("spec.config.plugins", "is not an array"));
            }
        };
        let single = !top.contains_key("plugins");
        for (i, plugin) in plugins.iter().enumerate() {
            let field = if single {
                "spec.config.type".to_owned()
            } else {
                format!("spec.config.plugins[{i}].type")
            };
            let kind = string(plugin, "type", &field)?;
            if !is_plugin_type(&kind) {
                return Err(CniError::config(
                    &field,
                    format!("{kind:?} is not a plugin binary's name"),
                ));
            }
        }
        Ok(ConfList {
            cni_version,
            name,
            plugins,
        })
    }

    /// The type (binary name) of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

fn string(object: &Map<String, Value>, key: &str, field: &str) -> Result<String, CniError> {
    match object.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(CniError::config(field, "is empty")),
        Some(_) => Err(CniError::config(field, "is not a string")),
        None => Err(CniError::config(field, "is missing")),
    }
}

/// A CNI network name: what libcni accepts in a cache file's name.
pub fn is_network_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "."
        && name != ".."
}

/// A plugin type: a file name in the bin directory, never a path.
pub fn is_plugin_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 64
        && !kind.starts_with('.')
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A container id as it travels in `CNI_CONTAINERID` and names a cache file.
pub fn is_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
