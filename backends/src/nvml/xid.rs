//! GPU health from NVML: critical XID events (the driver's error reports: 79 "fallen off the bus",
//! 48 double-bit ECC, 94/95 contained/uncontained ECC, ...). [`XidSource`] is the seam: [`RealXid`]
//! waits on an NVML event set registered for `CRITICAL_XID_ERROR` on every GPU, opened by an
//! [`NvmlSession`]; [`FakeXid`] plays events given in advance.

use std::collections::VecDeque;
use std::time::Duration;

/// One XID reported for one GPU.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XidEvent {
    /// The GPU's UUID (`GPU-...`); `None` when NVML could not name it (a GPU fallen off the bus
    /// answers "GPU is lost" to every query).
    pub uuid: Option<String>,
    /// The XID (0 when NVML says "unknown").
    pub xid: u64,
}

/// XIDs that report an application's error, not the GPU's (the list NVIDIA's device plugin skips):
/// 13 graphics engine exception, 31 memory page fault, 43 GPU stopped processing, 45 preemptive
/// cleanup, 68 video processor exception, 109 context switch timeout.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Whether an XID means the GPU itself is unhealthy.
pub fn is_critical(xid: u64) -> bool {
    !APPLICATION_XIDS.contains(&xid)
}

/// Where XID events come from.
pub trait XidSource: Send {
    /// The events of the next `timeout` (none when it passes quietly), or why there will be none.
    fn wait(&mut self, timeout: Duration) -> Result<Vec<XidEvent>, String>;
}

/// Events given in advance, delivered by the first wait; then quiet.
#[derive(Debug, Clone, Default)]
pub struct FakeXid(pub VecDeque<XidEvent>);

impl XidSource for FakeXid {
    fn wait(&mut self, _timeout: Duration) -> Result<Vec<XidEvent>, String> {
        Ok(self.0.drain(..).collect())
    }
}

/// NVML opened for the XID watch, under a share of the [`nvidia_gate`](crate::nvidia_gate): shut
/// down (the share given back) when dropped, so that a GPU can be unbound from `nvidia`, and so
/// that NVML, opened again, lists the GPUs bound since (it enumerates them when first initialized
/// in the process).
pub struct NvmlSession {
    // Dropped in this order: NVML shut down, then the share given back.
    nvml: nvml_wrapper::Nvml,
    _share: crate::nvidia_gate::Share<'static>,
}

impl NvmlSession {
    /// Opens NVML once no GPU is being unbound from `nvidia` (an error after
    /// [`SHARE_WAIT`](crate::nvidia_gate::SHARE_WAIT)), or says why it cannot.
    pub fn open() -> Result<NvmlSession, String> {
        use crate::nvidia_gate::{SHARE_WAIT, gate};
        let share = gate().share(SHARE_WAIT)?;
        let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML unavailable: {e}"))?;
        Ok(NvmlSession {
            nvml,
            _share: share,
        })
    }

    /// An event set registered for critical XIDs on every GPU it can: one that cannot be opened or
    /// registered (lost, too old for events) is listed in `unregistered` and the others are
    /// watched. An error when none can be.
    pub fn xids(&self) -> Result<RealXid<'_>, String> {
        use nvml_wrapper::bitmasks::event::EventTypes;
        let nvml = &self.nvml;
        let mut set = nvml.create_event_set().map_err(|e| e.to_string())?;
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        let mut unregistered = Vec::new();
        let mut registered = Vec::new();
        let mut watched = Vec::new();
        for index in 0..count {
            let device = match nvml.device_by_index(index) {
                Ok(device) => device,
                Err(e) => {
                    unregistered.push((None, format!("GPU {index}: {e}")));
                    continue;
                }
            };
            let uuid = device.uuid().ok();
            set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(set) => {
                    registered.push(device);
                    watched.extend(uuid);
                    set
                }
                Err(e) => {
                    let why = format!("GPU {index}: registering for XID events: {}", e.error);
                    unregistered.push((uuid, why));
                    // NVML freed the set: a new one, with the GPUs registered so far.
                    let mut fresh = nvml.create_event_set().map_err(|e| e.to_string())?;
                    for done in &registered {
                        fresh = done
                            .register_events(EventTypes::CRITICAL_XID_ERROR, fresh)
                            .map_err(|e| {
                                format!("registering again for XID events: {}", e.error)
                            })?;
                    }
                    fresh
                }
            };
        }
        if count > 0 && unregistered.len() == count as usize {
            let whys: Vec<&str> = unregistered.iter().map(|(_, why)| why.as_str()).collect();
            return Err(whys.join("; "));
        }
        Ok(RealXid {
            set,
            unregistered,
            watched,
        })
    }
}

/// NVML's event set, registered for critical XIDs on every GPU ([`NvmlSession::xids`]).
pub struct RealXid<'nvml> {
    set: nvml_wrapper::event::EventSet<'nvml>,
    /// The GPUs that could not be registered: the UUID where NVML could name it, and why.
    pub unregistered: Vec<(Option<String>, String)>,
    /// The UUIDs of the GPUs registered (where NVML could name them).
    pub watched: Vec<String>,
}

impl XidSource for RealXid<'_> {
    fn wait(&mut self, timeout: Duration) -> Result<Vec<XidEvent>, String> {
        use nvml_wrapper::enums::event::XidError;
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match self.set.wait(ms) {
            Ok(data) => {
                let uuid = data.device.uuid().ok();
                let xid = match data.event_data {
                    Some(XidError::Value(v)) => v,
                    Some(XidError::Unknown) | None => 0,
                };
                Ok(vec![XidEvent { uuid, xid }])
            }
            Err(nvml_wrapper::error::NvmlError::Timeout) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn application_xids_are_not_the_gpus_fault() {
        assert!(is_critical(79) && is_critical(48) && is_critical(94));
        assert!(!is_critical(13) && !is_critical(31) && !is_critical(43));
    }

    #[test]
    fn the_fake_delivers_once() {
        let mut fake = FakeXid(VecDeque::from([XidEvent {
            uuid: Some("GPU-1".into()),
            xid: 79,
        }]));
        assert_eq!(fake.wait(Duration::ZERO).unwrap().len(), 1);
        assert!(fake.wait(Duration::ZERO).unwrap().is_empty());
    }
}
