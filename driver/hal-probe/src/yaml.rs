//! A small YAML emitter for JSON values: block style, and every string double-quoted.
//!
//! Quoting every string is deliberate. `kubectl` reads YAML 1.1, where a plain `0008:06:00.0` is a
//! base-60 number and `on` a boolean; a slice printed with plain scalars would not round-trip into a
//! string attribute. Double-quoted strings use JSON escaping, which YAML accepts as is, with the
//! characters YAML cannot take raw escaped too.

use std::fmt::Write;

use serde_json::Value;

/// The value as a YAML document (without the `---` line).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_list(&mut out, items, 0),
        scalar => {
            out.push_str(&inline(scalar));
            out.push('\n');
        }
    }
    out
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A double-quoted scalar. serde_json escapes only what JSON must (`"`, `\`, C0 controls); YAML
/// also refuses raw DEL, C1 controls and U+FFFE/U+FFFF, and YAML 1.1 (kubectl's) breaks lines at
/// U+0085, U+2028 and U+2029: those, and the bidi controls, are written as `\u009b`, which both
/// read as the character.
fn quote(text: &str) -> String {
    allocator::text::json_safe(serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned()))
}

/// Keys are plain when they are made of letters, digits and `_./-` and start with a letter.
fn key(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain { text.to_owned() } else { quote(text) }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (i, (k, v)) in map.iter().enumerate() {
        // The first key of a map inside a list item goes on the `- ` line.
        if i > 0 || indent == 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        let _ = write!(out, "{}:", key(k));
        write_value(out, v, indent + 2);
    }
}

fn write_list(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_map(out, map, indent + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.pop();
                out.push('\n');
                write_list(out, inner, indent + 2);
            }
            scalar => {
                out.push_str(&inline(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_value(out: &mut String, value: &Value, indent: usize) {
    if !is_block(value) {
        let _ = writeln!(out, " {}", inline(value));
        return;
    }
    out.push('\n');
    match value {
        Value::Object(map) => write_map(out, map, indent),
        Value::Array(items) => write_list(out, items, indent),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_with_quoted_strings() {
        let value = json!({
            "apiVersion": "resource.k8s.io/v1",
            "spec": {
                "devices": [
                    {"name": "gpu-0", "attributes": {"pciAddress": {"string": "0008:06:00.0"}, "numaNode": {"int": 0}}},
                    {"name": "on", "capacity": {}}
                ],
                "nodeName": "n",
                "empty": [],
                "nested": [[1, 2], []],
                "weird key": true,
                "no": null
            }
        });
        let yaml = to_yaml(&value);
        assert_eq!(
            yaml,
            "apiVersion: \"resource.k8s.io/v1\"\nspec:\n  devices:\n    - attributes:\n        numaNode:\n          int: 0\n        \
             pciAddress:\n          string: \"0008:06:00.0\"\n      name: \"gpu-0\"\n    - capacity: {}\n      name: \"on\"\n  \
             empty: []\n  nested:\n    -\n      - 1\n      - 2\n    - []\n  \"no\": null\n  nodeName: \"n\"\n  \"weird key\": true\n"
        );
        assert_eq!(to_yaml(&json!("x\"y")), "\"x\\\"y\"\n");
    }

    /// A GPU model or a name with C1 controls, DEL, YAML 1.1 line breaks or bidi controls: written
    /// escaped, and read back, by the reader `explain --slices` uses, as the same string.
    #[test]
    fn strings_yaml_cannot_take_raw_are_escaped_and_read_back() {
        let hostile = "NVIDIA GB300\u{9b}31mC1RED\u{9b}0m \u{7f} \u{85}\u{2028}\u{2029} \u{202e}evil \
                       \u{fffe}\u{ffff} \u{1b}[0m\n\t é";
        let key = "example.com/x\u{9b}\u{202e}";
        let slice = json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": "s"},
            "spec": {
                "driver": "example.com",
                "nodeName": "n",
                "pool": {"name": "n", "generation": 1, "resourceSliceCount": 1},
                "devices": [{"name": "gpu-0", "attributes": {
                    "productName": {"string": hostile},
                    key: {"string": "k"}
                }}]
            }
        });
        let yaml = to_yaml(&slice);
        assert!(
            !yaml
                .chars()
                .any(|c| (hal::text::acts_on_terminal(c) && c != '\n')
                    || matches!(c, '\u{fffe}' | '\u{ffff}')),
            "{yaml:?}"
        );
        assert!(
            yaml.contains(r#"string: "NVIDIA GB300\u009b31mC1RED\u009b0m \u007f \u0085\u2028\u2029 \u202eevil \ufffe\uffff \u001b[0m\n\t é""#),
            "{yaml}"
        );
        let mut objects = allocator::Objects::default();
        objects.add_text("s.yaml", &yaml).unwrap();
        let attributes = objects.slices[0].spec.devices.as_ref().unwrap()[0]
            .attributes
            .as_ref()
            .unwrap();
        assert_eq!(attributes["productName"].string.as_deref(), Some(hostile));
        assert_eq!(attributes[key].string.as_deref(), Some("k"));
    }
}
