//! ResourceClaims of the fake API server: `GET` of one, and the server-side apply of its status
//! (`PATCH .../resourceclaims/<name>/status`), bound to the claim's UID as the real server binds it.
//!
//! What the real server answers a status apply of a claim (`k8s.io/apiserver`,
//! `k8s.io/apimachinery`, `pkg/registry/resource/resourceclaim`):
//! * no claim under the name: `404 NotFound` naming it. The status subresource never creates
//!   (`StatusREST.Update` in `pkg/registry/resource/resourceclaim/storage/storage.go` passes
//!   `forceAllowCreate` false), so `Store.Update` (`registry/generic/registry/store.go`) answers
//!   `NewNotFound` before the patch is applied;
//! * a `metadata.uid` that is not the stored claim's (it was deleted and re-created under its name):
//!   `422 Invalid`. A patch carries no UID precondition: `patchResource`
//!   (`endpoints/handlers/patch.go`) passes `rest.DefaultUpdatedObjectInfo(nil, ...)`, whose
//!   `Preconditions()` (`registry/rest/update.go`) is nil without an object, so there is no `409
//!   Conflict` "Precondition failed: UID in precondition" (which a `PUT` or a `DELETE` with a UID
//!   gets). The applied UID is merged into the object, and `rest.BeforeUpdate` →
//!   `validateCommonFields` → `ValidateObjectMetaAccessorUpdate` (`api/validation/objectmeta.go`)
//!   finds it changed (`ValidateImmutableField`: "field is immutable"), made a 422 by
//!   `errors.NewInvalid` (`api/errors/errors.go`);
//! * a `metadata.name` or `metadata.namespace` not the request's: `400 BadRequest` (`checkName` and
//!   `rest.EnsureObjectNamespaceMatchesRequestNamespace` in `patch.go`'s `applyPatch`);
//! * otherwise the applied `status.devices` replace what the field manager owned (here: the list).

use serde_json::{Value, json};

use super::{FakeApi, Reply, not_found, status};

impl FakeApi {
    /// Answers a request under `/apis/resource.k8s.io/v1/namespaces/` (`rest` is the path after
    /// it) when it is one for a ResourceClaim.
    pub(super) fn claim_request(
        &mut self,
        method: &str,
        rest: &str,
        body: &Value,
    ) -> Option<Reply> {
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [namespace, "resourceclaims", name, "status"] => {
                Some(self.apply_claim_status(method, namespace, name, body))
            }
            [namespace, "resourceclaims", name] => {
                let key = format!("{namespace}/{name}");
                Some(match (method, self.claims.get(&key)) {
                    ("GET", Some(claim)) => Reply::Json(200, claim.clone()),
                    _ => not_found("resource.k8s.io", "resourceclaims", name),
                })
            }
            _ => None,
        }
    }

    fn apply_claim_status(
        &mut self,
        method: &str,
        namespace: &str,
        name: &str,
        body: &Value,
    ) -> Reply {
        let key = format!("{namespace}/{name}");
        let Some(claim) = self.claims.get_mut(&key) else {
            return not_found("resource.k8s.io", "resourceclaims", name);
        };
        if method != "PATCH" || !body["status"].is_object() {
            return status(400, "a PATCH with a status is expected");
        }
        let meta = &body["metadata"];
        if meta["name"].as_str().is_some_and(|n| n != name) {
            let given = meta["name"].as_str().unwrap_or_default();
            return status(
                400,
                &format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                ),
            );
        }
        if meta["namespace"].as_str().is_some_and(|n| n != namespace) {
            return status(
                400,
                "the namespace of the provided object does not match the namespace sent on the request",
            );
        }
        // An empty UID is none: `BeforeUpdate` uses the stored one.
        if let Some(uid) = meta["uid"].as_str().filter(|u| !u.is_empty())
            && claim["metadata"]["uid"].as_str() != Some(uid)
        {
            return uid_changed(name, uid);
        }
        // Server-side apply by one field manager: its list replaces what it owned.
        claim["status"]["devices"] = body["status"]["devices"].clone();
        Reply::Json(200, claim.clone())
    }
}

/// `errors.NewInvalid(ResourceClaim.resource.k8s.io, name, [metadata.uid: Invalid value: uid: field
/// is immutable])`, as the real server writes it.
fn uid_changed(name: &str, uid: &str) -> Reply {
    let cause = format!("Invalid value: \"{uid}\": field is immutable");
    let mut body = super::status_body(
        422,
        &format!("ResourceClaim.resource.k8s.io \"{name}\" is invalid: metadata.uid: {cause}"),
    );
    body["details"] = json!({"name": name, "group": "resource.k8s.io", "kind": "ResourceClaim",
        "causes": [{"reason": "FieldValueInvalid", "message": cause, "field": "metadata.uid"}]});
    Reply::Json(422, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use serde_json::{Value, json};

    use super::{FakeApi, Reply};

    const PATH: &str = "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/claim-a/status";

    fn api() -> FakeApi {
        let mut api = FakeApi::with_node("node-1");
        api.claims.insert(
            "ns/claim-a".into(),
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                   "metadata": {"name": "claim-a", "namespace": "ns", "uid": "uid-new"},
                   "status": {"devices": [{"driver": "other.dev", "pool": "p", "device": "d"}]}}),
        );
        api
    }

    fn apply(api: &mut FakeApi, metadata: Value) -> (u16, Value) {
        let body = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": metadata,
            "status": {"devices": [{"driver": "hal.dra.dev", "pool": "node-1", "device": "vf"}]}});
        match api.handle("PATCH", PATH, &serde_json::to_vec(&body).unwrap()) {
            Reply::Json(code, body) => (code, body),
            other => panic!("not a JSON reply: {other:?}"),
        }
    }

    fn devices(api: &FakeApi) -> Value {
        api.claims["ns/claim-a"]["status"]["devices"].clone()
    }

    /// A status apply naming the UID of the claim deleted before (the one under the name now has
    /// another) is refused as the real server refuses it, and the claim keeps its status.
    #[test]
    fn a_status_apply_with_another_uid_is_422_invalid_and_writes_nothing() {
        let mut api = api();
        let before = devices(&api);
        let (code, body) = apply(
            &mut api,
            json!({"name": "claim-a", "namespace": "ns", "uid": "uid-old"}),
        );
        assert_eq!(code, 422);
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 422,
                   "reason": "Invalid",
                   "message": "ResourceClaim.resource.k8s.io \"claim-a\" is invalid: metadata.uid: \
                               Invalid value: \"uid-old\": field is immutable",
                   "details": {"name": "claim-a", "group": "resource.k8s.io", "kind": "ResourceClaim",
                               "causes": [{"reason": "FieldValueInvalid",
                                           "message": "Invalid value: \"uid-old\": field is immutable",
                                           "field": "metadata.uid"}]}})
        );
        assert_eq!(devices(&api), before);

        // The stored claim's UID, or none (the stored one is used): written.
        for metadata in [
            json!({"name": "claim-a", "uid": "uid-new"}),
            json!({}),
            json!({"uid": ""}),
        ] {
            let mut api = self::api();
            assert_eq!(apply(&mut api, metadata).0, 200);
            assert_eq!(devices(&api)[0]["device"], "vf");
        }
    }

    /// No claim under the name: 404 naming it (the status subresource never creates); another name
    /// or namespace in the body than the request's: 400.
    #[test]
    fn a_status_apply_of_a_missing_claim_is_404_and_of_another_name_400() {
        let mut api = api();
        api.claims.clear();
        let (code, body) = apply(&mut api, json!({"name": "claim-a", "uid": "uid-old"}));
        assert_eq!((code, &body["reason"]), (404, &json!("NotFound")));
        assert_eq!(body["details"]["name"], "claim-a");

        let mut api = self::api();
        assert_eq!(apply(&mut api, json!({"name": "claim-b"})).0, 400);
        assert_eq!(apply(&mut api, json!({"namespace": "other"})).0, 400);
        assert_eq!(devices(&api)[0]["device"], "d");
    }
}
