//! CNI mode: the kit's CNI runtime (`dra_podnet::cni`, re-exported here whole) and the driver's flags
//! for it ([`CniArgs`]).

use std::path::PathBuf;

pub use dra_podnet::cni::*;

/// The longest `--cni-timeout`: an hour.
pub const MAX_CNI_TIMEOUT: u64 = 3600;

/// Flags of CNI mode.
#[derive(Debug, Clone, clap::Args)]
pub struct CniArgs {
    /// Where the CNI plugin binaries are, for the NetworkAttachmentDefinitions that claims' VfConfig
    /// netAttachDefName names (attached at pod sandbox start, through NRI: needs --nri).
    #[arg(
        long,
        env = "CNI_BIN_DIR",
        value_name = "DIR",
        default_value = "/opt/cni/bin"
    )]
    pub cni_bin_dir: PathBuf,

    /// Seconds one CNI plugin call may take before it is killed, 1 to 3600.
    #[arg(
        long,
        env = "CNI_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=MAX_CNI_TIMEOUT)
    )]
    pub cni_timeout: u64,
}
