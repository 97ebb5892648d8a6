//! Fixture machines: real machine descriptions rendered into sysfs trees.
//!
//! A fixture is not a mock returning canned structs: [`FixtureMachine::materialize`] writes the files the
//! kernel would show (`cpu/online`, `cpuN/topology/*`, `cpuN/cache/index*/*`, `node/nodeN/*`, the Intel
//! hybrid PMU lists) into a temporary directory, and the real sysfs backend reads that directory. The
//! description also says what discovery must find ([`CpuLayout::expected`]), so every fixture is a
//! round-trip test of the backend.

mod cpu;
mod machines;

pub use cpu::{Arch, CpuLayout, ExpectedCpu};
pub use machines::{FIXTURES, FixtureMachine, by_name};

use std::io;
use std::path::Path;

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
    /// Writes the machine's sysfs tree into a fresh temporary directory.
    pub fn materialize(&self) -> io::Result<MaterializedFixture> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hal-fixture-{}-", self.name))
            .tempdir()?;
        self.render(dir.path())?;
        Ok(MaterializedFixture { dir })
    }

    /// Writes the machine's sysfs tree under `root` (which must exist).
    pub fn render(&self, root: &Path) -> io::Result<()> {
        self.cpu.render(root)
    }
}
