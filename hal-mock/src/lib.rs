//! Fixture machines: real machine descriptions rendered into sysfs trees.
//!
//! A fixture is not a mock returning canned structs: [`FixtureMachine::materialize`] writes the files the
//! kernel would show (`cpu/online`, `cpuN/topology/*`, `cpuN/cache/index*/*`, `node/nodeN/*`, the Intel
//! hybrid PMU lists) into a temporary directory, and the real sysfs backend reads that directory. The
//! description also says what discovery must find ([`CpuLayout::expected`]), so every fixture is a
//! round-trip test of the backend.
//!
//! For narrow unit tests of logic above the traits, [`mocks`] has [`mockall`] mocks of every `hal` trait.

mod bridges;
mod cpu;
mod devices;
mod hex;
mod kernel;
mod machines;
pub mod mocks;
mod pci;
mod tree;

pub use bridges::BridgeSpec;
pub use cpu::{Arch, CacheSizes, CpuLayout, ExpectedCpu};
pub use devices::{GpuSpec, NvidiaSpec, RdmaPortSpec, RdmaSpec};
pub use kernel::EmulatedKernel;
pub use machines::{
    DefaultDriver, FIXTURES, FixtureMachine, by_name, level_zero_answers, nvml_answers,
    verbs_answers,
};
pub use pci::{PciFunctionSpec, SriovSpec};

use std::io;
use std::path::Path;

/// A fresh temporary directory for sysfs trees: under `$TMPDIR` when it is set, else in RAM-backed
/// `/dev/shm` where there is one, else the system temporary directory. A tree is thousands of tiny
/// files; creating them on a disk-backed `/tmp` was 40 times slower on the CI machines.
pub fn scratch_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let parent = match std::env::var_os("TMPDIR") {
        None if shm.is_dir() => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    };
    tempfile::Builder::new().prefix(prefix).tempdir_in(parent)
}

/// A fixture written to a temporary directory, removed on drop.
#[derive(Debug)]
pub struct MaterializedFixture {
    dir: tempfile::TempDir,
}

impl MaterializedFixture {
    /// The fake filesystem root (holds `sys/`): pass it as `--sysfs-root` or to `SysfsRoot::new`.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl FixtureMachine {
    /// Writes the machine's sysfs tree into a fresh temporary directory (see [`scratch_dir`]).
    pub fn materialize(&self) -> io::Result<MaterializedFixture> {
        let dir = scratch_dir(&format!("hal-fixture-{}-", self.name))?;
        self.render(dir.path())?;
        Ok(MaterializedFixture { dir })
    }
}
