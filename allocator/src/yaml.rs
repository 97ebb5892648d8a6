//! YAML documents read as Kubernetes reads them, map keys included.
//!
//! kubectl and the API server read YAML with `sigs.k8s.io/yaml`: go-yaml v2 (YAML 1.1) parses the
//! text into `map[interface{}]interface{}`, then `convertToJSONableObject` turns each key into the
//! string JSON needs: a plain key `on:`, `yes:` or `y:` is the boolean true there and becomes the key
//! `"true"` (`off:`, `no:`, `n:` become `"false"`), a plain `1:` becomes `"1"`. A quoted key keeps
//! its text. Parsing into `serde_json::Value` loses that difference (every key arrives as its
//! text), so [`Document`] collects the documents itself, taking each key as serde-saphyr types it.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// One YAML node, with its map keys as `sigs.k8s.io/yaml` spells them.
pub(crate) struct Document(pub(crate) Value);

/// A map key: its text, or the text Kubernetes gives a boolean or number key.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map key (a string, boolean or number)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                // sigs.k8s.io/yaml formats a float key with FormatFloat(v, 'g', -1, 32): the shortest
                // text of the 32-bit value (its exponent form for very large or small keys differs).
                #[allow(clippy::cast_possible_truncation)]
                Ok(Key((v as f32).to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML node")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Document, E> {
                Ok(Document(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Document, E> {
                Ok(Document(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Document, E> {
                Ok(Document(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Document, E> {
                // JSON has no NaN or infinity: such a value is refused where a field reads it.
                Ok(Document(
                    Number::from_f64(v).map_or(Value::Null, Value::Number),
                ))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Document, E> {
                Ok(Document(Value::String(v.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
                Ok(Document(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Document, E> {
                Ok(Document(Value::Null))
            }
            fn visit_some<D2: Deserializer<'de>>(self, inner: D2) -> Result<Document, D2::Error> {
                Document::deserialize(inner)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
                let mut items = Vec::new();
                while let Some(Document(item)) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Document(Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
                let mut object = Map::new();
                while let Some((Key(key), Document(value))) = map.next_entry()? {
                    object.insert(key, value);
                }
                Ok(Document(Value::Object(object)))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Value, String> {
        let mut options = serde_saphyr::Options::default();
        options.strict_booleans = false;
        let mut documents: Vec<Document> =
            serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
        Ok(documents.remove(0).0)
    }

    #[test]
    fn plain_boolean_and_number_keys_become_their_json_text_quoted_keys_stay() {
        // As sigs.k8s.io/yaml (go-yaml v2, then convertToJSONableObject) reads them.
        let value =
            read("on: 1\n\"off\": 2\nn: 3\n'yes': 4\n1: 5\nname: n\nx: {y: z}\nl: [a, 1, true]\n")
                .unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "true": 1, "off": 2, "false": 3, "yes": 4, "1": 5, "name": false,
                "x": {"true": "z"}, "l": ["a", 1, true]
            })
        );
    }

    #[test]
    fn a_null_key_is_refused_as_kubernetes_refuses_it() {
        // convertToJSONableObject: "unsupported map key of type: %s".
        assert!(read("~: 1\n").is_err());
    }
}
