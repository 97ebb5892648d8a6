//! The service names and event numbers of NRI's API (`nri.pkg.api.v1alpha1`).

/// The service the runtime exposes to plugins.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The service a plugin exposes to the runtime.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";

/// NRI event numbers (the `Event` enum); a plugin subscribes with bit `event - 1`.
pub mod event {
    /// RunPodSandbox (delivered as a StateChange).
    pub const RUN_POD_SANDBOX: i32 = 1;
    /// StopPodSandbox (delivered as a StateChange).
    pub const STOP_POD_SANDBOX: i32 = 2;
    /// RemovePodSandbox (delivered as a StateChange).
    pub const REMOVE_POD_SANDBOX: i32 = 3;
    /// CreateContainer.
    pub const CREATE_CONTAINER: i32 = 4;
    /// PostCreateContainer (delivered as a StateChange).
    pub const POST_CREATE_CONTAINER: i32 = 5;
    /// StartContainer (delivered as a StateChange).
    pub const START_CONTAINER: i32 = 6;
    /// PostStartContainer (delivered as a StateChange).
    pub const POST_START_CONTAINER: i32 = 7;
    /// UpdateContainer.
    pub const UPDATE_CONTAINER: i32 = 8;
    /// PostUpdateContainer (delivered as a StateChange).
    pub const POST_UPDATE_CONTAINER: i32 = 9;
    /// StopContainer.
    pub const STOP_CONTAINER: i32 = 10;
    /// RemoveContainer (delivered as a StateChange).
    pub const REMOVE_CONTAINER: i32 = 11;

    /// The subscription mask of `events`.
    pub fn mask(events: &[i32]) -> i32 {
        events.iter().fold(0, |m, e| m | (1 << (e - 1)))
    }
}
