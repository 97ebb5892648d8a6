//! Running one CNI plugin binary: the CNI protocol is an exec of the plugin with `CNI_*` variables,
//! the config on stdin and the result (or a CNI error) on stdout. Stdout is read up to
//! [`MAX_OUTPUT`] (the rest is drained and the answer refused), and the child is killed at the
//! deadline.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::error::{CniError, CniErrorKind};

/// The most bytes of a plugin's stdout read.
pub const MAX_OUTPUT: usize = 1024 * 1024;

/// One call of a plugin.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `ADD`, `DEL`.
    pub command: &'a str,
    /// The plugin's type (its binary's name).
    pub plugin: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a Path,
    /// `CNI_IFNAME`.
    pub if_name: &'a str,
    /// `CNI_ARGS`, `K=V;K=V`.
    pub args: &'a str,
    /// The config on stdin.
    pub stdin: &'a [u8],
}

/// Finds `plugin` in `dirs` (the first directory that has it as a file).
pub fn find(dirs: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            CniError::new(
                CniErrorKind::NotFound,
                format!("CNI plugin {plugin:?} is not in {}", dirs.join(":")),
            )
        })
}

/// Kills the plugin `child` and its process group (what it started), reaps the plugin, and then
/// the group's members that were given to this process: run as PID 1 of its container (an image's
/// entrypoint in a PID namespace of its own; the chart's privileged pod shares the host's, whose
/// init reaps them instead), the plugin inherits every orphan, and an orphan nobody waits for stays
/// a zombie, one PID of the pod's limit each, for as long as the plugin runs.
fn end_group(child: &mut std::process::Child) {
    let group = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.kill();
    let _ = child.wait();
    reap_group(group);
}

/// Waits for the members of process group `group` that are this process's children (orphans it
/// inherited), up to a moment for those still dying; none when it inherited none (ECHILD).
fn reap_group(group: rustix::process::Pid) {
    use rustix::process::{WaitOptions, waitpgid};
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match waitpgid(group, WaitOptions::NOHANG) {
            Ok(Some(_)) => {}
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(rustix::io::Errno::INTR) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Runs `call` with the binaries of `dirs` (also its `CNI_PATH`), at most `timeout`; returns its stdout
/// as JSON (`Null` when it wrote nothing, as DEL may).
pub fn run(dirs: &[PathBuf], call: &Call<'_>, timeout: Duration) -> Result<Value, CniError> {
    let binary = find(dirs, call.plugin)?;
    let what = format!("CNI plugin {} ({})", call.plugin, call.command);
    let cni_path = std::env::join_paths(dirs)
        .map_err(|e| CniError::new(CniErrorKind::Exec, format!("{what}: CNI_PATH: {e}")))?;
    let mut command = Command::new(&binary);
    command
        .env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.if_name)
        .env("CNI_ARGS", call.args)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so a timeout kills what it started too (a delegated IPAM plugin),
        // not only the plugin: else that one goes on with its ADD while the rollback's DEL runs.
        .process_group(0);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    // ETXTBSY: the binary is being replaced, or another thread forked while it was written.
    let mut attempt = 0;
    let mut child = loop {
        match command.spawn() {
            Ok(child) => break child,
            Err(e) if e.raw_os_error() == Some(26) && attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(CniError::new(
                    CniErrorKind::Exec,
                    format!("{what}: {}: {e}", binary.display()),
                ));
            }
        }
    };
    // Capped: `--cni-timeout` is the operator's, and `Instant + u64::MAX s` would panic.
    let deadline = Instant::now() + timeout.min(Duration::from_secs(24 * 3600));
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());

    // The pipes are served by threads of their own. A thread that cannot start (EAGAIN: the pod's
    // pids limit) fails the call with the plugin and its group killed and reaped, not left running
    // beside the rollback's DEL.
    let mut spawn_or_kill = |work: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("cni-pipe".into())
            .spawn(work)
            .map(drop)
            .map_err(|e| {
                end_group(&mut child);
                CniError::new(
                    CniErrorKind::Exec,
                    format!("{what}: no thread for its pipes: {e}"),
                )
            })
    };
    if let Some(mut stdin) = pipes.0 {
        let bytes = call.stdin.to_vec();
        // A plugin that does not read its stdin must not block us: written beside.
        spawn_or_kill(Box::new(move || {
            let _ = stdin.write_all(&bytes);
        }))?;
    }
    let (sender, received) = mpsc::channel();
    if let Some(stdout) = pipes.1 {
        spawn_or_kill(Box::new(move || {
            let mut bytes = Vec::new();
            let mut limited = stdout.take(MAX_OUTPUT as u64 + 1);
            let read = limited.read_to_end(&mut bytes);
            // Drained, so the plugin never blocks on a full pipe.
            let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
            let _ = sender.send(read.map(|_| bytes));
        }))?;
    }
    // The start of its stderr, for an error (a Go panic goes there), kept as it comes: a process
    // the plugin started may hold stderr open long after the plugin ended. The rest drained.
    let stderr_start = Arc::new(Mutex::new(Vec::new()));
    let (err_sender, err_received) = mpsc::channel::<()>();
    if let Some(mut stderr) = pipes.2 {
        let kept = stderr_start.clone();
        spawn_or_kill(Box::new(move || {
            let mut buffer = [0; 4096];
            loop {
                let n = match stderr.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                if let (Ok(mut kept), Some(read)) = (kept.lock(), buffer.get(..n)) {
                    let room = (MAX_EXCERPT * 4).saturating_sub(kept.len());
                    kept.extend_from_slice(read.get(..room.min(n)).unwrap_or_default());
                }
            }
            let _ = err_sender.send(());
        }))?;
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                end_group(&mut child);
                return Err(CniError::new(
                    CniErrorKind::Timeout,
                    format!("{what} did not finish in {} s; killed", timeout.as_secs()),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                // Not left running, nor unreaped.
                let _ = child.kill();
                let _ = child.wait();
                return Err(CniError::new(CniErrorKind::Exec, format!("{what}: {e}")));
            }
        }
    };
    // A child of the plugin may hold stdout open: wait no longer than the deadline.
    let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100);
    let stdout = match received.recv_timeout(left) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return Err(CniError::new(
                CniErrorKind::Exec,
                format!("{what}: reading stdout: {e}"),
            ));
        }
        Err(_) => {
            // What it started holds its stdout: ended too (its group outlives it).
            end_group(&mut child);
            return Err(CniError::new(
                CniErrorKind::Timeout,
                format!("{what}: its stdout stayed open past the deadline"),
            ));
        }
    };
    if stdout.len() > MAX_OUTPUT {
        return Err(CniError::new(
            CniErrorKind::Exec,
            format!("{what}: its output is over {MAX_OUTPUT} bytes"),
        ));
    }
    let json: Option<Result<Value, _>> = match stdout.iter().all(u8::is_ascii_whitespace) {
        true => None,
        false => Some(serde_json::from_slice(&stdout)),
    };
    if !status.success() {
        // A plugin that failed before writing its error result (a Go panic, a shell error) says
        // why in text, on stderr or stdout: its status and the start of that text, not "not JSON".
        let excerpt = |bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let start: String = text.trim().chars().take(MAX_EXCERPT).collect();
            hal::text::escape_controls(&start).into_owned()
        };
        // The error result's text is the plugin's (often echoing a NetworkAttachmentDefinition's
        // values): cut and escaped as the text above, since it reaches the runtime and the log.
        let quoted = |text: &str| excerpt(text.as_bytes());
        let json = match json {
            Some(Ok(json)) => json,
            Some(Err(_)) => {
                let text = excerpt(&stdout);
                return Err(CniError::new(
                    CniErrorKind::Plugin,
                    format!("{what} failed ({status}), its output not a CNI error: {text}"),
                ));
            }
            None => {
                // Its end, or what came so far when something else still holds it open.
                let _ = err_received.recv_timeout(Duration::from_millis(100));
                let stderr = stderr_start.lock().map(|b| b.clone()).unwrap_or_default();
                let text = excerpt(&stderr);
                if !text.is_empty() {
                    return Err(CniError::new(
                        CniErrorKind::Plugin,
                        format!("{what} failed ({status}), no CNI error; stderr: {text}"),
                    ));
                }
                Value::Null
            }
        };
        let code = json.get("code").and_then(Value::as_u64);
        let msg = json.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = json
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut message = format!("{what} failed ({status})");
        if let Some(code) = code {
            message.push_str(&format!(", CNI error {code}"));
        }
        if !msg.is_empty() {
            message.push_str(&format!(": {}", quoted(msg)));
        }
        if !details.is_empty() {
            message.push_str(&format!(" ({})", quoted(details)));
        }
        return Err(CniError::new(CniErrorKind::Plugin, message));
    }
    match json {
        None => Ok(Value::Null),
        Some(parsed) => parsed.map_err(|e| {
            CniError::new(
                CniErrorKind::Exec,
                format!("{what}: its output is not JSON: {e}"),
            )
        }),
    }
}

/// The most of a failed plugin's text output an error quotes (characters).
const MAX_EXCERPT: usize = 200;
