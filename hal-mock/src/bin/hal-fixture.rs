//! `hal-fixture NAME DIR`: writes a fixture machine's sysfs tree into DIR (which must be empty or
//! absent), so other tools can read the same machine: `HWLOC_FSROOT=DIR lstopo`, `hal-probe --sysfs-root DIR`.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: hal-fixture NAME DIR\n\nWrites the sysfs tree of a fixture machine into DIR \
(created if absent; must be empty).\nFixtures: ";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fixtures = hal_mock::FIXTURES.join(", ");
    let [name, dir] = args.as_slice() else {
        if args.iter().any(|a| a == "-h" || a == "--help") {
            println!("{USAGE}{fixtures}");
            return ExitCode::SUCCESS;
        }
        eprintln!("{USAGE}{fixtures}");
        return ExitCode::from(2);
    };
    match write(name, Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hal-fixture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(name: &str, dir: &Path) -> Result<(), String> {
    let machine = hal_mock::by_name(name)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if entries.next().is_some() {
        return Err(format!("{}: not empty", dir.display()));
    }
    machine
        .render(dir)
        .map_err(|e| format!("writing {name} into {}: {e}", dir.display()))
}
