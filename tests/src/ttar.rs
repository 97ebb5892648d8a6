//! Extracts a `ttar` archive (the plain-text tree format of Prometheus' procfs and node_exporter
//! fixtures) into a directory: `Directory:`, `Path:` + `Lines:` + content (a last line ending in `EOF`
//! had no newline, `NULLBYTE` stands for a NUL byte), `SymlinkTo:`, `Mode:`, records separated by
//! `# ttar - - -` lines.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Component, Path};

/// Extracts `archive` under `into`. Paths that are absolute or climb with `..` are refused.
pub fn extract(archive: &Path, into: &Path) -> Result<(), String> {
    let text = fs::read_to_string(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut lines = text.lines();
    let mut path: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(dir) = line.strip_prefix("Directory: ") {
            fs::create_dir_all(into.join(safe(dir)?)).map_err(|e| format!("{dir}: {e}"))?;
        } else if let Some(p) = line.strip_prefix("Path: ") {
            path = Some(safe(p)?.to_owned());
        } else if let Some(count) = line.strip_prefix("Lines: ") {
            let count: usize = count.parse().map_err(|_| format!("bad line: {line}"))?;
            let p = path.take().ok_or("Lines: without Path:")?;
            let mut content = String::new();
            for _ in 0..count {
                let l = lines.next().ok_or(format!("{p}: archive ends early"))?;
                let l = l.replace("NULLBYTE", "\0");
                match l.strip_suffix("EOF") {
                    Some(last) => content.push_str(last),
                    None => {
                        content.push_str(&l);
                        content.push('\n');
                    }
                }
            }
            let dest = into.join(&p);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{p}: {e}"))?;
            }
            fs::write(&dest, content).map_err(|e| format!("{p}: {e}"))?;
        } else if let Some(target) = line.strip_prefix("SymlinkTo: ") {
            let p = path.take().ok_or("SymlinkTo: without Path:")?;
            let dest = into.join(&p);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("{p}: {e}"))?;
            }
            symlink(target, &dest).map_err(|e| format!("{p}: {e}"))?;
        }
    }
    Ok(())
}

fn safe(path: &str) -> Result<&str, String> {
    let ok = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    ok.then_some(path)
        .ok_or_else(|| format!("{path}: outside the archive"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_links_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.ttar");
        fs::write(
            &archive,
            "# Archive\nDirectory: sys\nMode: 755\n# ttar - - -\nPath: sys/a\nLines: 2\none\ntwoNULLBYTEEOF\nMode: 644\n# ttar - - -\n\
             Path: sys/l\nSymlinkTo: a\n# ttar - - -\nPath: sys/e\nLines: 0\nMode: 644\n",
        )
        .unwrap();
        let out = dir.path().join("out");
        extract(&archive, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("sys/a")).unwrap(), "one\ntwo\0");
        assert_eq!(fs::read_link(out.join("sys/l")).unwrap(), Path::new("a"));
        assert_eq!(fs::read_to_string(out.join("sys/e")).unwrap(), "");
        fs::write(&archive, "Path: ../x\nLines: 0\n").unwrap();
        assert!(extract(&archive, &out).is_err());
    }
}
