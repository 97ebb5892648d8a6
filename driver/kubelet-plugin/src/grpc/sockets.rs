//! Where the plugin's sockets live, how they are bound, and the lock that keeps two instances of the
//! driver on one node from serving at the same time.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hal::ErrorKind;
use tokio::net::UnixListener;

/// The longest socket path a Unix socket address holds: `sun_path` is 108 bytes on Linux, one of
/// them the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// The instance lock's file name in the plugin directory (the name the Go kubelet-plugin helper
/// uses for its cross-instance lock).
pub const INSTANCE_LOCK_FILE: &str = "serialize.lock";

/// How often a waiting instance retries the lock.
const LOCK_POLL: Duration = Duration::from_millis(200);

/// Mode of the directories created for the sockets.
const DIR_MODE: u32 = 0o700;
/// Mode of the sockets and the lock file: only the kubelet (root) and the driver connect.
const SOCKET_MODE: u32 = 0o600;

/// Why the plugin's sockets could not be set up or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The driver name cannot be used in a file name.
    #[error("invalid driver name {name:?}: {reason}")]
    InvalidDriverName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A socket path does not fit a Unix socket address.
    #[error(
        "socket path {} is {len} bytes, longer than the {max} bytes a Unix socket address holds; \
         use a shorter kubelet root dir or driver name",
        path.display()
    )]
    PathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit, [`MAX_SOCKET_PATH_BYTES`].
        max: usize,
    },
    /// A path is not UTF-8, so it cannot be sent to the kubelet as the DRA endpoint.
    #[error("path {} is not UTF-8", path.display())]
    NotUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// Something other than a socket is where a socket should be created; it is left alone.
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("failed to {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create directory`, `remove stale socket`, `bind`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A gRPC server failed while serving.
    #[error("gRPC server on {} failed: {source}", path.display())]
    Serve {
        /// The server's socket.
        path: PathBuf,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
}

impl SocketError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SocketError::InvalidDriverName { .. }
            | SocketError::PathTooLong { .. }
            | SocketError::NotUtf8 { .. } => ErrorKind::InvalidInput,
            SocketError::NotASocket { .. } => ErrorKind::Busy,
            SocketError::Io { source, .. } => ErrorKind::from_io(source),
            SocketError::Serve { .. } => ErrorKind::Io,
        }
    }

    fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SocketError {
        let path = path.to_owned();
        move |source| SocketError::Io { op, path, source }
    }
}

/// The plugin's socket paths, as the kubelet expects them:
/// `<root>/plugins_registry/<driver>-reg.sock` (registration, watched by the kubelet) and
/// `<root>/plugins/<driver>/dra.sock` (the DRA service, announced as the registration's endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSockets {
    driver_name: String,
    plugin_dir: PathBuf,
    registration: PathBuf,
    dra: PathBuf,
    dra_endpoint: String,
}

impl PluginSockets {
    /// The paths for `driver_name` under the kubelet root dir (`/var/lib/kubelet` by default; made
    /// absolute against the current directory). Checks that the driver name is usable as a file
    /// name and that both socket paths fit [`MAX_SOCKET_PATH_BYTES`]; touches nothing.
    pub fn new(kubelet_root_dir: &Path, driver_name: &str) -> Result<Self, SocketError> {
        check_driver_name(driver_name)?;
        let root = std::path::absolute(kubelet_root_dir)
            .map_err(SocketError::io("make absolute", kubelet_root_dir))?;
        let registration = root
            .join("plugins_registry")
            .join(format!("{driver_name}-reg.sock"));
        let plugin_dir = root.join("plugins").join(driver_name);
        let dra = plugin_dir.join("dra.sock");
        check_socket_path(&registration)?;
        check_socket_path(&dra)?;
        let dra_endpoint = dra
            .to_str()
            .ok_or_else(|| SocketError::NotUtf8 { path: dra.clone() })?
            .to_owned();
        Ok(PluginSockets {
            driver_name: driver_name.to_owned(),
            plugin_dir,
            registration,
            dra,
            dra_endpoint,
        })
    }

    /// The DRA driver name.
    pub fn driver_name(&self) -> &str {
        &self.driver_name
    }

    /// The registration socket, `<root>/plugins_registry/<driver>-reg.sock`.
    pub fn registration(&self) -> &Path {
        &self.registration
    }

    /// The DRA service socket, `<root>/plugins/<driver>/dra.sock`.
    pub fn dra(&self) -> &Path {
        &self.dra
    }

    /// The plugin's directory, `<root>/plugins/<driver>`: holds the DRA socket and the instance lock.
    pub fn plugin_dir(&self) -> &Path {
        &self.plugin_dir
    }

    /// The DRA socket as the UTF-8 text sent to the kubelet.
    pub(crate) fn dra_endpoint(&self) -> &str {
        &self.dra_endpoint
    }
}

fn check_driver_name(name: &str) -> Result<(), SocketError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a relative directory name")
    } else if name.contains(['/', '\0']) {
        Some("it contains '/' or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SocketError::InvalidDriverName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_socket_path(path: &Path) -> Result<(), SocketError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH_BYTES {
        return Err(SocketError::PathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_SOCKET_PATH_BYTES,
        });
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), SocketError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(SocketError::io("create directory", dir))
}

/// Removes a socket file left at `path` by a process that died without cleaning up; anything else
/// there is an error. A live instance's socket is never seen here, because every instance binds
/// only while holding the [`InstanceLock`].
fn remove_stale_socket(path: &Path) -> Result<(), SocketError> {
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SocketError::Io {
            op: "inspect",
            path: path.to_owned(),
            source,
        }),
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %path.display(), "removing stale socket");
            match fs::remove_file(path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(SocketError::Io {
                    op: "remove stale socket",
                    path: path.to_owned(),
                    source: error,
                }),
                _ => Ok(()),
            }
        }
        Ok(_) => Err(SocketError::NotASocket {
            path: path.to_owned(),
        }),
    }
}

/// Binds a listening socket at `path`: creates its directory (0700), replaces a stale socket, and
/// makes the socket 0600. Must run inside a tokio runtime.
pub(super) fn bind_socket(path: &Path) -> Result<UnixListener, SocketError> {
    check_socket_path(path)?;
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    remove_stale_socket(path)?;
    let listener = UnixListener::bind(path).map_err(SocketError::io("bind", path))?;
    if let Err(source) = fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE)) {
        drop(listener);
        let _ = fs::remove_file(path);
        return Err(SocketError::Io {
            op: "set the mode of",
            path: path.to_owned(),
            source,
        });
    }
    Ok(listener)
}

/// The exclusive lock one driver instance holds on a node while it serves; released when dropped
/// (or when the process dies, since it is an OS file lock).
#[derive(Debug)]
pub struct InstanceLock {
    // Held for its lock; never read.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive instance lock `<dir>/serialize.lock` (creating `dir`, 0700, and the file,
/// 0600, never through a symbolic link), waiting for as long as another instance holds it.
///
/// Take it before creating any socket and hold it for the server's lifetime: then two instances
/// of the driver on one node (a DaemonSet rolling update starts the new pod while the old one
/// still runs) never serve at the same time, never remove each other's sockets, and never
/// prepare claims concurrently. The new instance logs once that it waits, polls the lock, and
/// takes over as soon as the old one exits (the OS drops the lock even if it crashed); it then
/// replaces any socket the old one left behind.
///
/// This is a simpler take on the Go kubelet-plugin helper's rolling-update mode, which lets both
/// instances serve on distinct sockets and uses the same `serialize.lock` to serialize each call
/// across them. Keeping the default socket names works with every kubelet (the helper's mode
/// needs 1.33) and keeps claim state owned by one process at a time; the cost is a short gap
/// while the new instance binds. Readiness of the new pod must therefore not depend on it
/// serving, or a surge-only rollout (`maxUnavailable: 0`) waits forever.
pub async fn acquire_instance_lock(dir: &Path) -> Result<InstanceLock, SocketError> {
    create_dir(dir)?;
    let path = dir.join(INSTANCE_LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(SOCKET_MODE)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits().cast_signed())
        .open(&path)
        .map_err(SocketError::io("open lock file", &path))?;
    let mut waited = false;
    loop {
        match file.try_lock() {
            Ok(()) => {
                if waited {
                    tracing::info!(lock = %path.display(), "the previous instance exited; taking over");
                }
                return Ok(InstanceLock { _file: file, path });
            }
            Err(TryLockError::WouldBlock) => {
                if !waited {
                    tracing::info!(
                        lock = %path.display(),
                        "another instance of this driver runs on this node; waiting for it to exit"
                    );
                    waited = true;
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
            Err(TryLockError::Error(source)) => {
                return Err(SocketError::Io {
                    op: "lock",
                    path,
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_kubelet_layout() -> Result<(), SocketError> {
        let sockets = PluginSockets::new(Path::new("/var/lib/kubelet"), "gpu.example.com")?;
        assert_eq!(
            sockets.registration(),
            Path::new("/var/lib/kubelet/plugins_registry/gpu.example.com-reg.sock")
        );
        assert_eq!(
            sockets.dra(),
            Path::new("/var/lib/kubelet/plugins/gpu.example.com/dra.sock")
        );
        assert_eq!(
            sockets.dra_endpoint(),
            "/var/lib/kubelet/plugins/gpu.example.com/dra.sock"
        );
        assert_eq!(
            sockets.plugin_dir(),
            Path::new("/var/lib/kubelet/plugins/gpu.example.com")
        );
        Ok(())
    }

    #[test]
    fn bad_driver_names_are_rejected() {
        for name in ["", ".", "..", "a/b", "a\0b"] {
            let result = PluginSockets::new(Path::new("/var/lib/kubelet"), name);
            assert!(
                matches!(result, Err(SocketError::InvalidDriverName { .. })),
                "{name:?}: {result:?}"
            );
        }
    }

    #[test]
    fn the_limit_is_inclusive() {
        // "/r/plugins_registry/<name>-reg.sock", the longer path, is 29 bytes plus the name.
        let fits = "x".repeat(MAX_SOCKET_PATH_BYTES - 29);
        assert!(PluginSockets::new(Path::new("/r"), &fits).is_ok());
        let too_long = "x".repeat(MAX_SOCKET_PATH_BYTES - 28);
        let result = PluginSockets::new(Path::new("/r"), &too_long);
        assert!(
            matches!(result, Err(SocketError::PathTooLong { len: 108, .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_link_at_the_lock_file_is_refused_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("created-outside");
        std::os::unix::fs::symlink(&target, root.path().join(INSTANCE_LOCK_FILE)).unwrap();
        let error = acquire_instance_lock(root.path()).await.unwrap_err();
        assert!(error.to_string().contains("serialize.lock"), "{error}");
        assert!(!target.exists(), "nothing created through the link");
    }
}
