//! Kubernetes structured allocation (resource.k8s.io/v1, as the scheduler of Kubernetes 1.34, 1.35
//! or 1.36 does it, by default the newest) on one node's
//! ResourceSlices: which devices a ResourceClaim would get, and for a claim that fits nowhere, the
//! smallest reason (the request without candidates and what eliminated each device, or the constraint
//! that cannot be met).
//!
//! ```
//! use allocator::{Allocator, Objects, Status};
//!
//! let mut objects = Objects::default();
//! objects.add_text("example.yaml", r#"
//! apiVersion: resource.k8s.io/v1
//! kind: ResourceSlice
//! metadata: {name: node-a-gpus}
//! spec:
//!   driver: gpu.example.com
//!   nodeName: node-a
//!   pool: {name: node-a, generation: 1, resourceSliceCount: 1}
//!   devices:
//!   - name: gpu-0
//!     attributes: {numaNode: {int: 0}}
//!   - name: gpu-1
//!     attributes: {numaNode: {int: 1}}
//! ---
//! apiVersion: resource.k8s.io/v1
//! kind: DeviceClass
//! metadata: {name: gpu}
//! spec:
//!   selectors:
//!   - cel: {expression: 'device.driver == "gpu.example.com"'}
//! ---
//! apiVersion: resource.k8s.io/v1
//! kind: ResourceClaim
//! metadata: {name: one-gpu-on-numa-1, namespace: default}
//! spec:
//!   devices:
//!     requests:
//!     - name: gpu
//!       exactly:
//!         deviceClassName: gpu
//!         selectors:
//!         - cel: {expression: 'device.attributes["gpu.example.com"].numaNode == 1'}
//! "#).unwrap();
//! let mut allocator = Allocator::new(&objects.slices, objects.classes.clone(), &[], None).unwrap();
//! let outcome = allocator.explain(&objects.claims[0]);
//! assert_eq!(outcome.status, Status::Allocated);
//! assert_eq!(outcome.devices[0].device, "gpu-1");
//! ```

mod bounds;
mod capacity;
mod cel;
mod claim;
mod completeness;
mod cost;
mod domains;
mod explain;
mod extended;
mod gates;
mod input;
mod link;
mod matching;
mod model;
mod nodes;
mod outcome;
mod pod;
mod render;
mod reserved;
mod search;
pub mod synthetic;
pub mod text;
mod version;
mod why;
mod yaml;

pub use cel::{CompileError, CompileErrorKind, MAX_LENGTH, MAX_OPERATORS, STACK_BYTES};
pub use explain::{ADMIN_ACCESS_LABEL, Allocator, DEFAULT_STEP_LIMIT};
pub use extended::{CLASS_PREFIX, Implicit, implicit_claim};
pub use gates::FeatureGates;
pub use input::{ClaimInput, InputError, MAX_FILE_BYTES, Objects, PodInput, RequestMapping};
pub use link::{EXTENDED_RESOURCE_CLAIM_ANNOTATION, PodClaims, link_pod};
pub use model::{AttrValue, Pool, Pools};
pub use nodes::{Node, describe_node_selector};
pub use outcome::{Allocated, Outcome, Status};
pub use quantity::{Quantity, QuantityError};
pub use reserved::{PodIdentity, RESERVED_FOR_MAX_SIZE};
// The quantity parser lives in `hal`, so the plugin parses quantities without the allocator.
use hal::quantity;
pub use render::render_table;
pub use version::KubernetesVersion;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_allocation_selector;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_bounds;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_extended;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_gated;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_pod;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_pools;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_reserved;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_scheduler;
