//! What the NRI plugin reports on `/metrics`: whether it is registered with the runtime, the containers
//! it manages, and what it refused or could not apply.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// Counters and gauges, updated by the plugin and rendered with the plugin's metrics.
#[derive(Debug, Default)]
pub struct NriStats {
    connected: AtomicBool,
    exclusive: AtomicU64,
    shared: AtomicU64,
    refused: AtomicU64,
    update_failures: AtomicU64,
}

impl NriStats {
    /// Registered with the runtime (true) or not connected (false).
    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        if !connected {
            self.set_containers(0, 0);
        }
    }

    /// Whether the plugin is registered with the runtime.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The containers managed now: on their claims' CPUs, on the shared pool.
    pub fn set_containers(&self, exclusive: usize, shared: usize) {
        self.exclusive.store(exclusive as u64, Ordering::Relaxed);
        self.shared.store(shared as u64, Ordering::Relaxed);
    }

    /// (exclusive, shared) containers.
    pub fn containers(&self) -> (u64, u64) {
        (
            self.exclusive.load(Ordering::Relaxed),
            self.shared.load(Ordering::Relaxed),
        )
    }

    /// A container whose creation was refused (fail closed).
    pub fn add_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Containers refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Container updates the runtime did not apply.
    pub fn add_update_failures(&self, count: usize) {
        self.update_failures
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Adds these to `registry` (with their values now), for the plugin's `/metrics`.
    pub fn register(&self, registry: &mut Registry) {
        let (exclusive, shared) = self.containers();
        registry.register(
            "dra_hal_nri_connected",
            "1 while registered with the runtime's NRI socket",
            ConstGauge::new(i64::from(self.connected())),
        );
        let containers = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        for (placement, count) in [("exclusive", exclusive), ("shared", shared)] {
            containers
                .get_or_create(&[("placement", placement)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        registry.register(
            "dra_hal_nri_containers",
            "Containers the NRI plugin places, by placement",
            containers,
        );
        registry.register(
            "dra_hal_nri_refused_containers",
            "Containers whose creation was refused (empty shared pool, bad claim env)",
            ConstCounter::new(self.refused()),
        );
        registry.register(
            "dra_hal_nri_update_failures",
            "Container CPU updates the runtime did not apply (each is retried)",
            ConstCounter::new(self.update_failures.load(Ordering::Relaxed)),
        );
    }
}
