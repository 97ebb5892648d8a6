//! What stands for `hal-mock` in a build without the `fixture` feature (the plugin's image): no
//! fixture machine exists, so `--fixture NAME` is refused, saying how to get one.

use std::convert::Infallible;
use std::io;
use std::path::Path;

/// A fixture machine; none exists in this build.
#[derive(Debug)]
pub struct FixtureMachine {
    /// Name used by `--fixture`.
    pub name: String,
    never: Infallible,
}

impl FixtureMachine {
    /// The emulated kernel under `root` (never called: no machine exists).
    pub fn kernel(&self, _root: &Path) -> backends::FileWriter {
        let never = self.never;
        match never {}
    }

    /// Writes the machine's tree into `dir` (never called: no machine exists).
    pub fn render(&self, _dir: &Path) -> io::Result<()> {
        let never = self.never;
        match never {}
    }
}

/// `--fixture NAME` in a build without fixtures: none is known here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--fixture {name}: this binary is built without fixtures (cargo feature `fixture`)")]
pub struct NoFixture {
    /// The fixture asked for.
    pub name: String,
}

impl NoFixture {
    /// The coarse kind of this error: this build does not offer fixtures.
    pub fn kind(&self) -> hal::ErrorKind {
        hal::ErrorKind::Unsupported
    }
}

/// Always an error: this build has no fixtures.
pub fn by_name(name: &str) -> Result<FixtureMachine, NoFixture> {
    Err(NoFixture {
        name: name.to_owned(),
    })
}

/// No recorded NVML answers in this build.
pub fn nvml_answers(_name: &str) -> Option<&'static str> {
    None
}

/// No recorded Level Zero answers in this build.
pub fn level_zero_answers(_name: &str) -> Option<&'static str> {
    None
}

/// No recorded verbs answers in this build.
pub fn verbs_answers(_name: &str) -> Option<&'static str> {
    None
}
