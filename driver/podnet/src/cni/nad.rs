//! Reading a NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`, Multus's CRD) through the API server.

use std::time::Duration;

use kube::api::{ApiResource, DynamicObject};

use super::conf::ConfList;
use super::error::{CniError, CniErrorKind};

/// How long the read may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The resource: `network-attachment-definitions.k8s.cni.cncf.io`, version `v1`.
pub fn resource() -> ApiResource {
    ApiResource {
        group: "k8s.cni.cncf.io".into(),
        version: "v1".into(),
        api_version: "k8s.cni.cncf.io/v1".into(),
        kind: "NetworkAttachmentDefinition".into(),
        plural: "network-attachment-definitions".into(),
    }
}

/// Reads `namespace/name` and parses its `spec.config`; errors name the object and the field.
pub async fn read(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<ConfList, CniError> {
    let object = format!("NetworkAttachmentDefinition {namespace}/{name}");
    let api: kube::Api<DynamicObject> =
        kube::Api::namespaced_with(client.clone(), namespace, &resource());
    let nad = match tokio::time::timeout(TIMEOUT, api.get_opt(name)).await {
        Ok(Ok(Some(nad))) => nad,
        Ok(Ok(None)) => {
            return Err(CniError::new(
                CniErrorKind::NotFound,
                format!("{object} does not exist"),
            ));
        }
        Ok(Err(e)) => {
            return Err(CniError::new(
                CniErrorKind::Api,
                format!("reading {object}: {e}"),
            ));
        }
        Err(_) => {
            return Err(CniError::new(
                CniErrorKind::Api,
                format!("reading {object}: no answer in {} s", TIMEOUT.as_secs()),
            ));
        }
    };
    let config = match nad.data.get("spec").and_then(|s| s.get("config")) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(_) => {
            return Err(CniError::config("spec.config", "is not a string").context(&object));
        }
        None => String::new(),
    };
    ConfList::parse(&config).map_err(|e| e.context(&object))
}
