//! A pod-networking kit for DRA drivers of network devices: it puts a host netdev into a pod sandbox's
//! network namespace and takes it out again, and it tells which netdevs are the node's own network.
//! It has no policy of its own: which device goes into which pod, under which configuration, is the
//! driver's (the `driver` crate decides it from its claims and its checkpoint).
//!
//! - Direct mode ([`direct`], dranet's way): the netdev is moved into the pod's namespace through
//!   rtnetlink ([`netlink`]), renamed and given its MTU, addresses and routes ([`config::Checked`]),
//!   with its RDMA device in the kernel's exclusive RDMA netns mode ([`rdma`]); what moving it back
//!   needs is kept on disk ([`moved`]) so that a restarted plugin still finds it.
//! - CNI mode ([`cni`], the SR-IOV DRA driver's way): a NetworkAttachmentDefinition's CNI plugins are
//!   run as the CNI spec says, their results cached for DEL.
//! - The node's own network ([`hostnet`]): the interfaces of the default routes and of the node's
//!   InternalIP, and those below them, which a driver should never publish or move.
//!
//! Every failure is a [`NetError`] or a [`cni::CniError`], each with a kind.

pub mod cni;
pub mod config;
pub mod direct;
pub mod error;
pub mod hostnet;
pub mod moved;
pub mod netlink;
pub mod rdma;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{NetError, NetErrorKind};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests_root;
