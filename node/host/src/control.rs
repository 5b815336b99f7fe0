//! The local control socket: owner-only JSON over a Unix socket.
//!
//! Both daemons (`node run`, `seednode run`) serve it; their command-line tools (`node status`,
//! `seednode approve 3`, ...) connect, send one request and read one answer.
//!
//! # Wire
//! One JSON object per line, newline-terminated, each way. The server is generic over the
//! daemon's typed request and answer (`Req`, `Resp`): a request line must deserialize into
//! `Req` (a JSON object with a `cmd` tag, in Cordon's control plane), and the answer is an
//! envelope, `{"ok": true, "result": <Resp>}` or `{"ok": false, "error": "<message>"}`. The
//! server forwards each parsed request to the daemon as a [`ControlRequest`] and writes back its
//! `Result<Resp, String>`. JSON values exist only inside this codec.
//!
//! # Who can connect
//! Only the owner of the data directory. [`bind`] refuses to create the socket in a directory
//! that other users can enter (it must be 0700), which also closes the window between `bind`
//! and `chmod`; the socket file is then set to 0600 (Linux checks write permission on the
//! socket file at connect time).
//!
//! # Bounds
//! Every resource a client can make the server hold is bounded by [`ControlLimits`]: request
//! size, concurrent clients, time to send the request and get the answer, and the queue to the
//! event loop (requests are handed over with `try_send`, so a slow event loop turns into
//! "busy, try again" rather than a growing backlog). Clients cap the answer they read at
//! [`MAX_RESPONSE_BYTES`].
//!
//! # One daemon per data directory
//! A socket file that nothing answers on is stale (a crashed daemon) and is replaced; a socket
//! that answers means another daemon uses this data directory, and [`bind`] fails with
//! [`ControlError::InUse`]. The socket file is removed when the server stops, but only if it is
//! still the file this server created.

use std::future::Future;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon_membership::ownership;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

/// File name of the control socket inside a data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// Largest answer a client reads, in bytes (16 MiB). A larger answer is refused with
/// [`ControlError::ResponseTooLarge`] instead of being buffered.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How long [`bind`] waits for an existing socket to answer before deciding it is live.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Read size of one socket read.
const READ_CHUNK: usize = 4096;

/// A request handed to the daemon: the parsed request and where to send its answer; an `Err`
/// message is shown to the operator as is.
pub type ControlRequest<Req, Resp> = (Req, oneshot::Sender<Result<Resp, String>>);

/// Bounds on what control-socket clients can make the server hold (config section
/// `[control]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlLimits {
    /// Largest request line, in bytes, without its newline. Default: 65,536.
    pub max_request_bytes: usize,
    /// Concurrent client connections; further ones get an error envelope and are closed.
    /// Default: 16.
    pub max_clients: usize,
    /// Time a client has to send its request plus the time the event loop has to answer it.
    /// Default: 30 s (a `node call` may wait for a remote answer and a Kademlia lookup).
    #[serde(with = "crate::config::duration")]
    pub request_timeout: Duration,
    /// Capacity of the channel to the event loop; see [`ControlLimits::channel`]. Default: 32.
    pub queue: usize,
}

impl Default for ControlLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 65_536,
            max_clients: 16,
            request_timeout: Duration::from_secs(30),
            queue: 32,
        }
    }
}

impl ControlLimits {
    /// Checks the bounds: requests of 1 KiB to 16 MiB, 1 to 1,024 clients, 1 s to 10 min,
    /// a queue of 1 to 65,536.
    pub fn validate(&self) -> Result<(), crate::config::Invalid> {
        use crate::config::{duration_in_range, in_range};
        in_range("max_request_bytes", self.max_request_bytes, 1024, 16 << 20)?;
        in_range("max_clients", self.max_clients, 1, 1024)?;
        duration_in_range(
            "request_timeout",
            self.request_timeout,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        in_range("queue", self.queue, 1, 65_536)
    }

    /// Creates the bounded channel between the server and the event loop, with capacity
    /// `queue` (at least 1).
    #[allow(clippy::type_complexity)]
    pub fn channel<Req, Resp>(
        &self,
    ) -> (
        mpsc::Sender<ControlRequest<Req, Resp>>,
        mpsc::Receiver<ControlRequest<Req, Resp>>,
    ) {
        mpsc::channel(self.queue.max(1))
    }
}

/// Failure to serve or reach the control socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Another daemon answers on this socket.
    #[error(
        "another process is running with this data directory (it answers on {path}); stop it first or use another --data directory"
    )]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Nothing listens on the socket.
    #[error(
        "no daemon is listening on {path}; start it with `run --data {}` (`node run` or `seednode run`)",
        parent_display(.path)
    )]
    NotRunning {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket exists where the socket belongs.
    #[error(
        "{path} exists and is not a socket; refusing to replace it (move it away if it is not needed)"
    )]
    NotASocket {
        /// The offending file.
        path: PathBuf,
    },
    /// The directory holding the socket can be entered by other users.
    #[error(
        "the directory {dir} has mode {mode:03o}, so other users could reach the control socket in it; run `chmod 700 {dir}`"
    )]
    InsecureDirectory {
        /// The directory.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The socket or its directory belongs to another user.
    #[error("control socket: {0}")]
    Owner(#[from] ownership::Exposure),
    /// The socket could not be created.
    #[error(
        "cannot create the control socket {path}: {source}; check that the data directory exists and is writable (socket paths are limited to about 100 bytes)"
    )]
    Bind {
        /// The socket.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The caller may not open the socket.
    #[error(
        "permission denied on the control socket {path}; run the command as the user that owns the data directory"
    )]
    PermissionDenied {
        /// The socket.
        path: PathBuf,
    },
    /// Another I/O error on the socket.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// No answer arrived in time.
    #[error(
        "no answer on the control socket {path} within {}; the daemon may be overloaded, try again",
        humantime::format_duration(*.after)
    )]
    Timeout {
        /// The socket.
        path: PathBuf,
        /// The time waited.
        after: Duration,
    },
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error(
        "the answer on {path} is larger than {max} bytes; narrow the request (for example with --network)"
    )]
    ResponseTooLarge {
        /// The socket.
        path: PathBuf,
        /// The cap.
        max: usize,
    },
    /// The answer is not a valid envelope.
    #[error(
        "the daemon on {path} sent a malformed answer ({reason}); check that the command-line tool and the daemon are the same version"
    )]
    BadResponse {
        /// The socket.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The daemon refused or failed the request; the message is the daemon's.
    #[error("{0}")]
    Remote(String),
}

fn parent_display(path: &Path) -> String {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.display().to_string(),
        _ => ".".to_owned(),
    }
}

/// The control socket of a data directory: `<data_dir>/control.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// A successful answer: `{"ok": true, "result": result}`.
fn ok_envelope<Resp: Serialize>(result: &Resp) -> Value {
    match serde_json::to_value(result) {
        Ok(result) => json!({ "ok": true, "result": result }),
        Err(e) => error_envelope(format!("internal error: cannot encode the answer ({e})")),
    }
}

/// A failed answer: `{"ok": false, "error": message}`. The message is shown to the operator,
/// so it says what was wrong and how to fix it, and never carries secret material.
fn error_envelope(message: impl std::fmt::Display) -> Value {
    json!({ "ok": false, "error": message.to_string() })
}

/// A bound control socket, ready to [`serve`](ControlListener::serve).
///
/// Binding before serving lets a daemon fail fast with [`ControlError::InUse`] before it starts
/// anything else. Dropping the listener removes its socket file.
#[derive(Debug)]
pub struct ControlListener {
    listener: UnixListener,
    guard: SocketGuard,
}

/// Removes the socket file on drop, if it is still the one this process created.
#[derive(Debug)]
struct SocketGuard {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|meta| meta.dev() == self.dev && meta.ino() == self.ino)
            .unwrap_or(false);
        if ours && let Err(error) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "cannot remove the control socket");
        }
    }
}

/// Creates the control socket at `path` so that only its owner can connect.
///
/// The parent directory must not be accessible to group or others. A stale socket file (nothing
/// answers on it) is replaced; a live one fails with [`ControlError::InUse`]; any other kind of
/// file there fails with [`ControlError::NotASocket`].
pub async fn bind(path: &Path) -> Result<ControlListener, ControlError> {
    check_directory(path)?;
    remove_if_stale(path).await?;
    let listener = UnixListener::bind(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ControlError::InUse {
                path: path.to_owned(),
            }
        } else {
            ControlError::Bind {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    // From here on, dropping the guard removes the file on any error path.
    let guard = SocketGuard {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ControlError::Bind {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(ControlListener { listener, guard })
}

fn check_directory(path: &Path) -> Result<(), ControlError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ControlError::InsecureDirectory {
            dir: dir.to_owned(),
            mode,
        });
    }
    ownership::check_owner(dir, &meta)?;
    Ok(())
}

/// A client talks only to a socket its own user created: another user's daemon (or a socket
/// planted in its place) would be answering for this one.
fn check_socket_owner(path: &Path) -> Result<(), ControlError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(ownership::check_owner(path, &meta)?),
        // Connecting reports a missing socket as "not running".
        Err(_) => Ok(()),
    }
}

async fn remove_if_stale(path: &Path) -> Result<(), ControlError> {
    let io_error = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ControlError::NotASocket {
            path: path.to_owned(),
        });
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // Someone accepted, or the backlog is full: either way a daemon is alive.
        Ok(Ok(_)) | Err(_) => Err(ControlError::InUse {
            path: path.to_owned(),
        }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => Err(ControlError::InUse {
            path: path.to_owned(),
        }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "replaced a stale control socket");
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(e)),
            }
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(io_error(e)),
    }
}

/// Binds the control socket at `path` and serves it until `shutdown` completes; see
/// [`bind`] and [`ControlListener::serve`]. The socket file is removed on return.
pub async fn serve<Req, Resp>(
    path: &Path,
    limits: ControlLimits,
    requests: mpsc::Sender<ControlRequest<Req, Resp>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ControlError>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    bind(path).await?.serve(limits, requests, shutdown).await
}

impl ControlListener {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.guard.path
    }

    /// Serves clients until `shutdown` completes, forwarding each valid request to `requests`.
    ///
    /// Client connections still open at shutdown are dropped, and the socket file is removed.
    pub async fn serve<Req, Resp>(
        self,
        limits: ControlLimits,
        requests: mpsc::Sender<ControlRequest<Req, Resp>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ControlError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
    {
        let Self { listener, guard } = self;
        tracing::info!(path = %guard.path.display(), "control socket listening");
        let limits = Arc::new(limits);
        let permits = Arc::new(Semaphore::new(limits.max_clients));
        let mut clients = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => {
                            clients.spawn(serve_client(
                                stream,
                                Arc::clone(&limits),
                                requests.clone(),
                                permit,
                            ));
                        }
                        Err(_) => refuse_client(&stream, limits.max_clients),
                    },
                    Err(error) => {
                        tracing::warn!(%error, "control socket accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                },
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
        clients.shutdown().await;
        drop(listener);
        drop(guard);
        tracing::info!("control socket closed");
        Ok(())
    }
}

/// Answers a client over the limit without blocking the accept loop: the envelope is tiny and
/// fits the fresh socket's buffer, and if it does not, the client just sees the connection
/// close.
fn refuse_client(stream: &UnixStream, max_clients: usize) {
    tracing::debug!(max_clients, "control client refused: too many connections");
    let answer = error_envelope(format!(
        "too many control connections (at most {max_clients}); try again"
    ));
    let _ = stream.try_write(&envelope_line(&answer));
}

fn envelope_line(answer: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(answer)
        .unwrap_or_else(|_| br#"{"ok":false,"error":"internal error"}"#.to_vec());
    line.push(b'\n');
    line
}

async fn serve_client<Req, Resp>(
    mut stream: UnixStream,
    limits: Arc<ControlLimits>,
    requests: mpsc::Sender<ControlRequest<Req, Resp>>,
    _permit: OwnedSemaphorePermit,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let answer = answer_client(&mut stream, &limits, &requests).await;
    let line = envelope_line(&answer);
    let written = tokio::time::timeout(limits.request_timeout, async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%error, "cannot answer control client"),
        Err(_) => tracing::debug!("control client did not read its answer in time"),
    }
}

async fn answer_client<Req, Resp>(
    stream: &mut UnixStream,
    limits: &ControlLimits,
    requests: &mpsc::Sender<ControlRequest<Req, Resp>>,
) -> Value
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let waited = humantime::format_duration(limits.request_timeout);
    let line = match tokio::time::timeout_at(
        deadline,
        read_line_async(stream, limits.max_request_bytes),
    )
    .await
    {
        Ok(Ok(line)) => line,
        Ok(Err(LineError::TooLarge)) => {
            return error_envelope(format!(
                "request larger than {} bytes",
                limits.max_request_bytes
            ));
        }
        Ok(Err(LineError::Empty)) => {
            return error_envelope("empty request; send one JSON object followed by a newline");
        }
        Ok(Err(LineError::Io(error))) => {
            return error_envelope(format!("cannot read the request: {error}"));
        }
        Err(_) => {
            return error_envelope(format!(
                "no complete request within {waited}; send one JSON object followed by a newline"
            ));
        }
    };
    let request = match parse_request(&line) {
        Ok(request) => request,
        Err(message) => return error_envelope(message),
    };
    let (reply, answer) = oneshot::channel();
    match requests.try_send((request, reply)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return error_envelope("busy, try again"),
        Err(TrySendError::Closed(_)) => return error_envelope("node is shutting down"),
    }
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(Ok(answer))) => ok_envelope(&answer),
        Ok(Ok(Err(message))) => error_envelope(message),
        Ok(Err(_)) => error_envelope("node is shutting down"),
        Err(_) => error_envelope(format!(
            "the node did not answer within {waited}; it may be overloaded, try again"
        )),
    }
}

/// Parses a request line as the server does: JSON first (so garbage gets a JSON error), then
/// the daemon's type. The error is what the client is told.
pub fn parse_request<Req: DeserializeOwned>(line: &[u8]) -> Result<Req, String> {
    const SHAPE: &str =
        r#"a request is one JSON object with a "cmd" string field, e.g. {"cmd": "status"}"#;
    let request: Value =
        serde_json::from_slice(line).map_err(|e| format!("invalid JSON ({e}); {SHAPE}"))?;
    if !matches!(request.get("cmd"), Some(Value::String(_))) {
        return Err(format!("missing \"cmd\"; {SHAPE}"));
    }
    serde_json::from_value(request).map_err(|e| format!("invalid request: {e}"))
}

#[derive(Debug)]
enum LineError {
    /// More than the cap before a newline.
    TooLarge,
    /// The peer closed without sending anything.
    Empty,
    /// A read failed (read timeouts of blocking sockets show up here too).
    Io(io::Error),
}

/// Accumulates one newline-terminated line of at most `max` bytes.
struct LineBuffer {
    buf: Vec<u8>,
    max: usize,
}

impl LineBuffer {
    fn new(max: usize) -> Self {
        Self {
            buf: Vec::with_capacity(max.saturating_add(1).min(READ_CHUNK)),
            max,
        }
    }

    /// Feeds the bytes of one read (empty at end of stream). Returns the line, without its
    /// newline, once complete; bytes after the newline are ignored. A line cut by the end of
    /// stream counts as complete.
    fn feed(&mut self, data: &[u8]) -> Option<Result<Vec<u8>, LineError>> {
        if data.is_empty() {
            if self.buf.is_empty() {
                return Some(Err(LineError::Empty));
            }
            return Some(Ok(std::mem::take(&mut self.buf)));
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        if let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            self.buf.truncate(start + i);
            if self.buf.len() > self.max {
                return Some(Err(LineError::TooLarge));
            }
            return Some(Ok(std::mem::take(&mut self.buf)));
        }
        if self.buf.len() > self.max {
            return Some(Err(LineError::TooLarge));
        }
        None
    }
}

async fn read_line_async<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, LineError> {
    let mut line = LineBuffer::new(max);
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let n = reader.read(&mut chunk).await.map_err(LineError::Io)?;
        if let Some(done) = line.feed(&chunk[..n]) {
            return done;
        }
    }
}

fn connect_error(path: &Path, error: io::Error) -> ControlError {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NotRunning {
            path: path.to_owned(),
        },
        io::ErrorKind::PermissionDenied => ControlError::PermissionDenied {
            path: path.to_owned(),
        },
        _ => ControlError::Io {
            path: path.to_owned(),
            source: error,
        },
    }
}

/// The daemon may answer and close before reading all of an oversized request; the answer is
/// still worth reading.
fn is_disconnect(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn request_line<Req: Serialize>(path: &Path, request: &Req) -> Result<Vec<u8>, ControlError> {
    let mut line = serde_json::to_vec(request).map_err(|e| ControlError::Io {
        path: path.to_owned(),
        source: e.into(),
    })?;
    line.push(b'\n');
    Ok(line)
}

fn response_error(path: &Path, error: LineError, timeout: Duration) -> ControlError {
    match error {
        LineError::TooLarge => ControlError::ResponseTooLarge {
            path: path.to_owned(),
            max: MAX_RESPONSE_BYTES,
        },
        LineError::Empty => ControlError::BadResponse {
            path: path.to_owned(),
            reason: "it closed the connection without answering".to_owned(),
        },
        LineError::Io(error) if is_timeout(&error) => ControlError::Timeout {
            path: path.to_owned(),
            after: timeout,
        },
        LineError::Io(source) => ControlError::Io {
            path: path.to_owned(),
            source,
        },
    }
}

/// Opens an answer envelope: the `result` on success, [`ControlError::Remote`] on failure.
fn open_envelope<Resp: DeserializeOwned>(path: &Path, line: &[u8]) -> Result<Resp, ControlError> {
    let bad = |reason: String| ControlError::BadResponse {
        path: path.to_owned(),
        reason,
    };
    let mut answer: Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    match answer.get("ok") {
        Some(Value::Bool(true)) => {
            let result = answer
                .get_mut("result")
                .map(Value::take)
                .unwrap_or(Value::Null);
            serde_json::from_value(result).map_err(|e| bad(format!("unexpected result: {e}")))
        }
        Some(Value::Bool(false)) => match answer.get_mut("error").map(Value::take) {
            Some(Value::String(message)) => Err(ControlError::Remote(message)),
            _ => Err(bad("\"ok\": false without an \"error\" string".to_owned())),
        },
        _ => Err(bad("no \"ok\" boolean".to_owned())),
    }
}

/// Sends one request to the daemon listening on `path` and returns its `result`.
///
/// A refusal by the daemon is [`ControlError::Remote`] with the daemon's message; no socket or
/// nobody listening is [`ControlError::NotRunning`]. The whole exchange is bounded by `timeout`,
/// and answers larger than [`MAX_RESPONSE_BYTES`] are refused.
pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, ControlError> {
    match tokio::time::timeout(timeout, call_async(path, request, timeout)).await {
        Ok(result) => result,
        Err(_) => Err(ControlError::Timeout {
            path: path.to_owned(),
            after: timeout,
        }),
    }
}

async fn call_async<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, ControlError> {
    let line = request_line(path, request)?;
    check_socket_owner(path)?;
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|e| connect_error(path, e))?;
    if let Err(error) = stream.write_all(&line).await
        && !is_disconnect(&error)
    {
        return Err(ControlError::Io {
            path: path.to_owned(),
            source: error,
        });
    }
    let answer = read_line_async(&mut stream, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| response_error(path, e, timeout))?;
    open_envelope(path, &answer)
}

/// Blocking [`call`] for command-line tools without a runtime: a std `UnixStream` whose read
/// and write timeouts follow one deadline, `timeout` from now.
///
/// Connecting is not covered by the deadline (std has no connect timeout for Unix sockets); it
/// only blocks if the daemon's accept backlog is full.
pub fn call_blocking<Req: Serialize, Resp: DeserializeOwned>(
    path: &Path,
    request: &Req,
    timeout: Duration,
) -> Result<Resp, ControlError> {
    let deadline = Instant::now() + timeout;
    let timed_out = || ControlError::Timeout {
        path: path.to_owned(),
        after: timeout,
    };
    let io_error = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
    };
    let line = request_line(path, request)?;
    check_socket_owner(path)?;
    let mut stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| connect_error(path, e))?;
    let left = remaining().ok_or_else(timed_out)?;
    stream.set_write_timeout(Some(left)).map_err(io_error)?;
    match stream.write_all(&line) {
        Ok(()) => {}
        Err(error) if is_disconnect(&error) => {}
        Err(error) if is_timeout(&error) => return Err(timed_out()),
        Err(error) => return Err(io_error(error)),
    }
    let mut answer = LineBuffer::new(MAX_RESPONSE_BYTES);
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let left = remaining().ok_or_else(timed_out)?;
        stream.set_read_timeout(Some(left)).map_err(io_error)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(response_error(path, LineError::Io(error), timeout)),
        };
        if let Some(done) = answer.feed(&chunk[..n]) {
            let line = done.map_err(|e| response_error(path, e, timeout))?;
            return open_envelope(path, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// A running server plus an event loop that echoes requests.
    struct Server {
        path: PathBuf,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), ControlError>>,
        _dir: tempfile::TempDir,
    }

    impl Server {
        async fn stop(mut self) -> Result<(), ControlError> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            tokio::time::timeout(WAIT, &mut self.task)
                .await
                .unwrap()
                .unwrap()
        }
    }

    fn echo_loop(mut rx: mpsc::Receiver<ControlRequest<Value, Value>>) {
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(Ok(json!({ "echo": request })));
            }
        });
    }

    /// A temporary directory with mode 0700 (tempfile leaves it to the umask).
    fn private_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    async fn start(limits: ControlLimits) -> Server {
        let dir = private_tempdir();
        let path = socket_path(dir.path());
        let (tx, rx) = limits.channel();
        echo_loop(rx);
        start_with(dir, path, limits, tx).await
    }

    async fn start_with(
        dir: tempfile::TempDir,
        path: PathBuf,
        limits: ControlLimits,
        tx: mpsc::Sender<ControlRequest<Value, Value>>,
    ) -> Server {
        let listener = bind(&path).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve(limits, tx, async move {
            let _ = stopped.await;
        }));
        Server {
            path,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn raw_exchange(path: &Path, bytes: &[u8]) -> Value {
        let mut stream = UnixStream::connect(path).await.unwrap();
        // The server may answer and close before reading everything.
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[tokio::test]
    async fn round_trip_async_and_blocking() {
        let server = start(ControlLimits::default()).await;
        let request = json!({ "cmd": "status", "verbose": true });
        let result = call::<Value, Value>(&server.path, &request, WAIT)
            .await
            .unwrap();
        assert_eq!(result, json!({ "echo": request }));

        let path = server.path.clone();
        let blocking_request = request.clone();
        let result = tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || {
                call_blocking::<Value, Value>(&path, &blocking_request, WAIT)
            }),
        )
        .await
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!(result, json!({ "echo": request }));
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn remote_error_is_returned_as_remote() {
        let dir = private_tempdir();
        let path = socket_path(dir.path());
        let limits = ControlLimits::default();
        let (tx, mut rx) = limits.channel();
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Err("no such request 7; list them with `pending`".to_owned()));
            }
        });
        let server = start_with(dir, path, limits, tx).await;
        let err = call::<Value, Value>(&server.path, &json!({ "cmd": "approve" }), WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Remote(m) if m.contains("no such request 7")),
            "{err}"
        );
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn socket_is_owner_only_and_removed_on_shutdown() {
        let server = start(ControlLimits::default()).await;
        let mode = std::fs::metadata(&server.path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let path = server.path.clone();
        server.stop().await.unwrap();
        assert!(!path.exists(), "socket file left behind");
    }

    #[tokio::test]
    async fn refuses_a_directory_others_can_enter() {
        let dir = private_tempdir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = bind(&socket_path(dir.path())).await.unwrap_err();
        assert!(
            matches!(err, ControlError::InsecureDirectory { mode: 0o755, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[tokio::test]
    async fn oversized_request_refused_and_next_client_served() {
        let limits = ControlLimits {
            max_request_bytes: 1024,
            ..ControlLimits::default()
        };
        let server = start(limits).await;
        let big = json!({ "cmd": "x", "pad": "a".repeat(300_000) });
        let err = call::<Value, Value>(&server.path, &big, WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Remote(m) if m == "request larger than 1024 bytes"),
            "{err}"
        );
        // Just over the limit, newline-terminated.
        let mut line = format!(r#"{{"cmd":"x","pad":"{}"}}"#, "a".repeat(1024)).into_bytes();
        line.push(b'\n');
        let answer = raw_exchange(&server.path, &line).await;
        assert_eq!(answer["ok"], json!(false));
        let ok = call::<Value, Value>(&server.path, &json!({ "cmd": "status" }), WAIT)
            .await
            .unwrap();
        assert_eq!(ok["echo"]["cmd"], "status");
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn garbage_and_missing_cmd_refused() {
        let server = start(ControlLimits::default()).await;
        for bad in [
            &b"this is not json\n"[..],
            b"{\"nocmd\": 1}\n",
            b"{\"cmd\": 7}\n",
            b"[\"cmd\"]\n",
            b"\n",
        ] {
            let answer = raw_exchange(&server.path, bad).await;
            assert_eq!(answer["ok"], json!(false), "{answer}");
            assert!(
                answer["error"].as_str().unwrap().contains("cmd"),
                "{answer}"
            );
        }
        let answer = raw_exchange(&server.path, b"").await;
        assert_eq!(answer["ok"], json!(false));
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn extra_client_refused_others_served() {
        let limits = ControlLimits {
            max_clients: 2,
            ..ControlLimits::default()
        };
        let server = start(limits).await;
        let mut first = UnixStream::connect(&server.path).await.unwrap();
        let mut second = UnixStream::connect(&server.path).await.unwrap();
        // The server accepts in connection order, so the third one is over the limit.
        let third = raw_exchange(&server.path, b"").await;
        assert_eq!(third["ok"], json!(false));
        assert!(
            third["error"].as_str().unwrap().contains("too many"),
            "{third}"
        );
        for stream in [&mut first, &mut second] {
            stream.write_all(b"{\"cmd\":\"status\"}\n").await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
                .await
                .unwrap()
                .unwrap();
            let answer: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(answer["ok"], json!(true), "{answer}");
        }
        // Permits are released: a new client is served.
        let ok = call::<Value, Value>(&server.path, &json!({ "cmd": "status" }), WAIT).await;
        assert!(ok.is_ok(), "{ok:?}");
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn busy_and_shutting_down() {
        let dir = private_tempdir();
        let path = socket_path(dir.path());
        let limits = ControlLimits {
            queue: 1,
            request_timeout: Duration::from_secs(2),
            ..ControlLimits::default()
        };
        // An event loop that never reads: the first request fills the queue.
        let (tx, rx) = limits.channel();
        let server = start_with(dir, path, limits, tx).await;
        let first_path = server.path.clone();
        let first = tokio::spawn(async move {
            call::<Value, Value>(&first_path, &json!({ "cmd": "slow" }), WAIT).await
        });
        // Wait until the first request sits in the queue.
        tokio::time::timeout(WAIT, async {
            while rx.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let err = call::<Value, Value>(&server.path, &json!({ "cmd": "status" }), WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Remote(m) if m == "busy, try again"),
            "{err}"
        );
        // The event loop goes away: the queued request and new ones hear it.
        drop(rx);
        let err = tokio::time::timeout(WAIT, first)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Remote(m) if m == "node is shutting down"),
            "{err}"
        );
        let err = call::<Value, Value>(&server.path, &json!({ "cmd": "status" }), WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Remote(m) if m == "node is shutting down"),
            "{err}"
        );
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn not_running_when_nothing_listens() {
        let dir = private_tempdir();
        let path = socket_path(dir.path());
        let err = call::<Value, Value>(&path, &json!({ "cmd": "status" }), WAIT)
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::NotRunning { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("no daemon is listening on"), "{message}");
        assert!(
            message.contains(&format!("run --data {}", dir.path().display())),
            "{message}"
        );
        // A stale socket file: connection refused.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err =
            call_blocking::<Value, Value>(&path, &json!({ "cmd": "status" }), WAIT).unwrap_err();
        assert!(matches!(err, ControlError::NotRunning { .. }), "{err}");
    }

    #[tokio::test]
    async fn second_server_on_live_socket_is_in_use() {
        let server = start(ControlLimits::default()).await;
        let (tx, _rx) = ControlLimits::default().channel();
        let second = tokio::time::timeout(
            WAIT,
            serve::<Value, Value>(&server.path, ControlLimits::default(), tx, async {}),
        )
        .await
        .unwrap();
        let err = second.unwrap_err();
        assert!(matches!(err, ControlError::InUse { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("another process is running with this data directory"),
            "{err}"
        );
        let ok = call::<Value, Value>(&server.path, &json!({ "cmd": "status" }), WAIT).await;
        assert!(ok.is_ok(), "{ok:?}");
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced() {
        let dir = private_tempdir();
        let path = socket_path(dir.path());
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let limits = ControlLimits::default();
        let (tx, rx) = limits.channel();
        echo_loop(rx);
        let server = start_with(dir, path, limits, tx).await;
        let ok = call::<Value, Value>(&server.path, &json!({ "cmd": "status" }), WAIT).await;
        assert!(ok.is_ok(), "{ok:?}");
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn refuses_to_replace_a_regular_file() {
        let dir = private_tempdir();
        let path = socket_path(dir.path());
        std::fs::write(&path, b"not a socket").unwrap();
        let err = bind(&path).await.unwrap_err();
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }

    #[test]
    fn serve_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (tx, _rx) = ControlLimits::default().channel::<Value, Value>();
        let path = Path::new("/nonexistent/control.sock");
        let future = serve(path, ControlLimits::default(), tx, async {});
        assert_send(&future);
        let call_future = call::<Value, Value>(path, &Value::Null, WAIT);
        assert_send(&call_future);
    }

    #[test]
    fn envelopes_open() {
        let path = Path::new("/x/control.sock");
        assert_eq!(
            open_envelope::<Value>(path, br#"{"ok":true,"result":[1]}"#).unwrap(),
            json!([1])
        );
        assert_eq!(
            open_envelope::<Value>(path, br#"{"ok":true}"#).unwrap(),
            Value::Null
        );
        assert!(matches!(
            open_envelope::<Value>(path, br#"{"ok":false,"error":"no"}"#),
            Err(ControlError::Remote(m)) if m == "no"
        ));
        assert!(matches!(
            open_envelope::<Value>(path, br#"{"ok":false}"#),
            Err(ControlError::BadResponse { .. })
        ));
        assert!(matches!(
            open_envelope::<Value>(path, b"nope"),
            Err(ControlError::BadResponse { .. })
        ));
    }

    #[test]
    fn line_buffer_caps_and_splits() {
        let mut line = LineBuffer::new(4);
        assert!(line.feed(b"ab").is_none());
        assert_eq!(line.feed(b"cd\nrest").unwrap().unwrap(), b"abcd");
        let mut line = LineBuffer::new(4);
        assert!(matches!(
            line.feed(b"abcde"),
            Some(Err(LineError::TooLarge))
        ));
        let mut line = LineBuffer::new(4);
        assert!(matches!(
            line.feed(b"abcde\n"),
            Some(Err(LineError::TooLarge))
        ));
        let mut line = LineBuffer::new(4);
        assert!(line.feed(b"ab").is_none());
        assert_eq!(line.feed(b"").unwrap().unwrap(), b"ab");
        assert!(matches!(
            LineBuffer::new(4).feed(b""),
            Some(Err(LineError::Empty))
        ));
    }
}
