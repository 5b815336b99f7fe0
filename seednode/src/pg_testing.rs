//! A real, throwaway PostgreSQL server for tests (no mocks), one per test process, and a fresh
//! database on it for each test.
//!
//! The first call to [`fresh_database`] starts the server: `initdb` into a new temporary
//! directory (data directory and Unix socket directory inside it), then `postgres` listening
//! on `127.0.0.1` at a free port. PostgreSQL refuses to run as root, so when the tests run as
//! root the directory is given to the `postgres` user and the server's tools run through
//! `runuser -u postgres --`. Authentication is `trust` (the server only listens on loopback
//! and a private socket directory), except for the role [`PASSWORD_ROLE`], which must give its
//! password ([`PASSWORD`], SCRAM) over TCP, for tests of password handling. `fsync` is off:
//! test data need not survive a crash of the machine, and the tests run several times faster.
//! A benchmark that compares PostgreSQL with a durable store calls [`make_durable`] first, so
//! the server keeps PostgreSQL's own, durable defaults instead.
//!
//! The server offers TLS on TCP with a certificate for `127.0.0.1` and `localhost`, issued by
//! a CA made for this process ([`TestServer::ca_file`]), so seednodes' default (`prefer`) and
//! `verify-full` connections are encrypted, and [`untrusted_ca_pem`] gives a CA it does not
//! chain to.
//!
//! A test that stops and restarts PostgreSQL under running seednodes takes a server of its own
//! ([`private_server`], [`fresh_database_on`]), so the other tests of the process keep theirs:
//! [`TestServer::stop`] shuts it down (fast: sessions are terminated) and keeps it down,
//! [`TestServer::start`] starts it again on the same port and data directory.
//!
//! # Cleanup
//! The server runs under a small shell watchdog whose standard input is a pipe from this
//! process. When this process ends, however it ends (even SIGKILL), or the [`TestServer`] is
//! dropped, the pipe closes; the watchdog then stops the server (fast shutdown) and deletes the
//! temporary directory. So no server outlives `cargo test`.
//!
//! # Finding PostgreSQL
//! The binaries are found with `pg_config --bindir`, else under `/usr/lib/postgresql/*/bin`.
//! Without them the tests fail (never skip) with a message saying to run `scripts/setup`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::postgres::PostgresOptions;

/// How long the server may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The test server of this process.
#[derive(Debug)]
pub struct TestServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The directory holding its Unix socket.
    pub socket_dir: PathBuf,
    /// The PEM certificate of the CA that issued the server's TLS certificate.
    pub ca_file: PathBuf,
    /// The temporary directory holding everything (data, socket, the watchdog's flag files).
    root: PathBuf,
    /// PostgreSQL's binaries.
    bin: PathBuf,
    /// The watchdog; dropping its stdin (at process exit) stops the server.
    _watchdog: Mutex<(Child, ChildStdin)>,
}

/// A login role that must authenticate with [`PASSWORD`] over TCP.
pub const PASSWORD_ROLE: &str = "cordon_pw";

/// [`PASSWORD_ROLE`]'s password.
pub const PASSWORD: &str = "pw-for-tests-only";

/// Who may connect how: everyone over the socket, [`PASSWORD_ROLE`] over TCP with its
/// password, everyone else over TCP without one.
const HBA: &str = "local all all trust
host all cordon_pw 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
";

static SERVER: OnceLock<Result<TestServer, String>> = OnceLock::new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);
static DURABLE: AtomicBool = AtomicBool::new(false);

/// The server options that trade durability for speed (PostgreSQL's defaults are all `on`).
const FAST_UNSAFE: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";

/// Makes the server this process starts commit durably (`fsync`, `synchronous_commit` and
/// `full_page_writes` left at PostgreSQL's defaults), for benchmarks that compare it with a
/// store that waits for the disk. Call it before the first [`server`] or [`fresh_database`]:
/// returns `false` when the server already runs, with whatever it started with.
pub fn make_durable() -> bool {
    DURABLE.store(true, Ordering::SeqCst);
    SERVER.get().is_none()
}

/// The process's test server, started on first use.
///
/// # Panics
/// If the server cannot be started (with the reason, e.g. that `scripts/setup` must be run).
pub fn server() -> &'static TestServer {
    match SERVER.get_or_init(start) {
        Ok(server) => server,
        Err(reason) => panic!("cannot start the test PostgreSQL server: {reason}"),
    }
}

/// Creates a new, empty database on the test server and returns options that reach it over
/// TCP as the `postgres` user (no password: the server trusts loopback).
///
/// # Panics
/// If the server cannot be started or the database not created.
pub async fn fresh_database() -> PostgresOptions {
    fresh_database_on(server()).await
}

/// Like [`fresh_database`], on `server` (e.g. a [`private_server`]).
///
/// # Panics
/// If the database cannot be created.
pub async fn fresh_database_on(server: &TestServer) -> PostgresOptions {
    let name = create_database_owned_by(server, "postgres").await;
    PostgresOptions {
        url: format!("postgres://postgres@127.0.0.1:{}/{name}", server.port),
        ..PostgresOptions::default()
    }
}

/// A server of the caller's own (not the process's shared one), for a test that stops and
/// starts it; dropping it stops it and deletes its data.
///
/// # Panics
/// If the server cannot be started.
pub fn private_server() -> TestServer {
    start().unwrap_or_else(|reason| panic!("cannot start a private PostgreSQL server: {reason}"))
}

/// How long [`TestServer::stop`] and [`TestServer::start`] wait for the server.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

impl TestServer {
    /// Stops the server (fast shutdown: open sessions are terminated, nothing committed is
    /// lost) and keeps it stopped until [`TestServer::start`]. Returns once it no longer
    /// answers.
    ///
    /// # Panics
    /// If it is still answering after a minute.
    pub fn stop(&self) {
        std::fs::write(self.root.join(PAUSED), b"")
            .unwrap_or_else(|e| panic!("cannot pause the test server: {e}"));
        let pid = std::fs::read_to_string(self.root.join(PID_FILE))
            .unwrap_or_else(|e| panic!("cannot read the test server's pid: {e}"));
        let pid = pid.trim();
        // The server runs as the postgres user when we are root; root may signal it.
        let _ = Command::new("kill").args(["-INT", pid]).status();
        // Gone, not merely refusing connections while it shuts down (the watchdog must see
        // the pause before `start` lifts it).
        let deadline = Instant::now() + RESTART_TIMEOUT;
        while Path::new("/proc").join(pid).exists() {
            assert!(
                Instant::now() < deadline,
                "the test server did not stop within {RESTART_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_answering(false);
    }

    /// Starts the server again after [`TestServer::stop`], on the same port and data
    /// directory; returns once it answers.
    ///
    /// # Panics
    /// If it does not answer within a minute.
    pub fn start(&self) {
        std::fs::remove_file(self.root.join(PAUSED))
            .unwrap_or_else(|e| panic!("cannot resume the test server: {e}"));
        self.wait_answering(true);
    }

    fn wait_answering(&self, answering: bool) {
        let deadline = Instant::now() + RESTART_TIMEOUT;
        while is_ready(&self.bin, &self.socket_dir, self.port) != answering {
            assert!(
                Instant::now() < deadline,
                "the test server did not {} within {RESTART_TIMEOUT:?}",
                if answering { "start" } else { "stop" }
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether the server at `socket_dir`/`port` accepts connections.
fn is_ready(bin: &Path, socket_dir: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .arg("-h")
        .arg(socket_dir)
        .args(["-p", &port.to_string(), "-U", "postgres", "-q"])
        .status()
        .is_ok_and(|status| status.success())
}

/// Creates a new, empty database owned by [`PASSWORD_ROLE`] and returns options that reach
/// it over TCP as that role, without a password: the caller supplies [`PASSWORD`] (or a
/// wrong one).
///
/// # Panics
/// If the server cannot be started or the database not created.
pub async fn fresh_password_database() -> PostgresOptions {
    fresh_password_database_on(server()).await
}

/// Like [`fresh_password_database`], on `server` (e.g. a [`private_server`]).
///
/// # Panics
/// If the database cannot be created.
pub async fn fresh_password_database_on(server: &TestServer) -> PostgresOptions {
    let name = create_database_owned_by(server, PASSWORD_ROLE).await;
    PostgresOptions {
        url: format!(
            "postgres://{PASSWORD_ROLE}@127.0.0.1:{}/{name}",
            server.port
        ),
        ..PostgresOptions::default()
    }
}

/// Creates a new, empty database on the test server and returns its name.
///
/// # Panics
/// If the server cannot be started or the database not created.
pub async fn create_database() -> String {
    create_database_owned_by(server(), "postgres").await
}

async fn create_database_owned_by(server: &TestServer, owner: &str) -> String {
    let name = format!("t_{}", NEXT_DATABASE.fetch_add(1, Ordering::Relaxed));
    let client = admin(server, "postgres").await;
    if let Err(e) = client
        .batch_execute(&format!("CREATE DATABASE {name} OWNER {owner}"))
        .await
    {
        panic!(
            "cannot create test database {name}: {}",
            crate::postgres::pg_detail(&e)
        );
    }
    name
}

/// A superuser connection to `database` on the test server, over its Unix socket.
///
/// # Panics
/// If it cannot connect.
pub async fn admin(server: &TestServer, database: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(&server.socket_dir)
        .port(server.port)
        .user("postgres")
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = match config.connect(tokio_postgres::NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "cannot connect to the test PostgreSQL server: {}",
            crate::postgres::pg_detail(&e)
        ),
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The directory of PostgreSQL's server binaries.
fn bindir() -> Result<PathBuf, String> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|dir| has_initdb(dir))
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres) found via `pg_config --bindir` or \
         under /usr/lib/postgresql/*/bin; run `scripts/setup` to install postgresql-15"
            .to_owned()
    })
}

fn running_as_root() -> bool {
    cordon_membership::ownership::effective_uid() == 0
}

/// A command for PostgreSQL's tool `program`, run as the `postgres` user when we are root.
fn pg_command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn start() -> Result<TestServer, String> {
    let bin = bindir()?;
    // As root, under /tmp: the postgres user must reach the directory, and TMPDIR may be
    // private to root. (Its short path also keeps the socket path under its 107-byte limit.)
    let parent = if running_as_root() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let root = tempfile::Builder::new()
        .prefix("cordon-pg-")
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?
        // The watchdog deletes it when the server stops.
        .keep();
    if running_as_root() {
        let uid = id_of("-u")?;
        let gid = id_of("-g")?;
        std::os::unix::fs::chown(&root, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to the postgres user: {e}", root.display()))?;
    }
    let data = root.join("data");
    let socket_dir = root.join("socket");
    run(pg_command(Path::new("mkdir")).arg(&socket_dir))?;
    run(pg_command(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        .arg("--no-instructions"))?;
    run(pg_command(Path::new("sh"))
        .args(["-c", "printf '%s' \"$2\" > \"$1\"", "sh"])
        .arg(data.join("pg_hba.conf"))
        .arg(HBA))?;
    let ca_file = install_tls(&root, &data)?;
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        match launch(&bin, &root, &data, &socket_dir, port) {
            Ok(mut server) => {
                server.ca_file = ca_file;
                run(Command::new(bin.join("psql"))
                    .arg("-h")
                    .arg(&socket_dir)
                    .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
                    .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
                    .arg(format!(
                        "CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'"
                    )))?;
                return Ok(server);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Makes a CA and a server certificate for `127.0.0.1` and `localhost`, puts the certificate
/// and its key (owner-only) in the data directory, turns TLS on in `postgresql.conf`, and
/// returns the CA's certificate file (in `root`).
fn install_tls(root: &Path, data: &Path) -> Result<PathBuf, String> {
    let fail = |e: rcgen::Error| format!("cannot make the test certificates: {e}");
    let (ca, ca_key) = test_ca("cordon test CA").map_err(fail)?;
    let server_key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cordon test PostgreSQL");
    let server = params.signed_by(&server_key, &ca, &ca_key).map_err(fail)?;
    let write_private = "umask 077; printf '%s' \"$2\" > \"$1\"";
    run(pg_command(Path::new("sh"))
        .args(["-c", write_private, "sh"])
        .arg(data.join("server.crt"))
        .arg(server.pem()))?;
    run(pg_command(Path::new("sh"))
        .args(["-c", write_private, "sh"])
        .arg(data.join("server.key"))
        .arg(server_key.serialize_pem()))?;
    run(pg_command(Path::new("sh"))
        .args(["-c", "printf '%s' \"$2\" >> \"$1\"", "sh"])
        .arg(data.join("postgresql.conf"))
        .arg("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"))?;
    let ca_file = root.join("test-ca.pem");
    std::fs::write(&ca_file, ca.pem())
        .map_err(|e| format!("cannot write {}: {e}", ca_file.display()))?;
    Ok(ca_file)
}

fn test_ca(name: &str) -> Result<(rcgen::Certificate, rcgen::KeyPair), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    Ok((params.self_signed(&key)?, key))
}

/// The PEM certificate of a new CA that the test server's certificate does not chain to.
///
/// # Panics
/// If it cannot be made.
pub fn untrusted_ca_pem() -> String {
    test_ca("cordon untrusted test CA")
        .unwrap_or_else(|e| panic!("cannot make a test CA: {e}"))
        .0
        .pem()
}

/// The postgres user's uid (`-u`) or gid (`-g`).
fn id_of(flag: &str) -> Result<u32, String> {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|e| format!("cannot run `id`: {e}"))?;
    if !out.status.success() {
        return Err(
            "there is no postgres user; run `scripts/setup` to install postgresql-15".to_owned(),
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("cannot read the postgres user's id: {e}"))
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{command:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
///
/// # Panics
/// If no port can be bound.
pub fn unused_port() -> u16 {
    free_port().unwrap_or_else(|e| panic!("{e}"))
}

/// A port on 127.0.0.1 that was free a moment ago (the server may still lose it to a race;
/// [`start`] then tries another).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// The watchdog: runs the server, stops it when its stdin (our pipe) closes, then deletes
/// the temporary directory. fd 3 keeps the pipe for the background reader (a background job's
/// own stdin is /dev/null). The server's pid is in `$5/PID_FILE`; when it exits while the file
/// `$5/PAUSED` exists ([`TestServer::stop`]), the watchdog waits for the file to go
/// ([`TestServer::start`]) and runs it again. `$6` is [`FAST_UNSAFE`] or empty, split into
/// words.
const WATCHDOG: &str = r#"
exec 3<&0
( cat <&3 >/dev/null; touch "$5/gone"; kill -INT "$(cat "$5/pg.pid")" 2>/dev/null ) &
status=0
while :; do
    "$1/postgres" -D "$2" -k "$3" -p "$4" -c listen_addresses=127.0.0.1 $6 \
        -c max_connections=300 </dev/null 3<&- &
    pg=$!
    echo "$pg" > "$5/pg.pid"
    wait "$pg"
    status=$?
    [ -e "$5/paused" ] || break
    while [ -e "$5/paused" ] && [ ! -e "$5/gone" ]; do sleep 0.05; done
    [ -e "$5/gone" ] && break
done
rm -rf "$5"
exit "$status"
"#;

/// The watchdog's flag file that keeps a stopped server down.
const PAUSED: &str = "paused";
/// The watchdog's file holding the server's pid.
const PID_FILE: &str = "pg.pid";

fn launch(
    bin: &Path,
    root: &Path,
    data: &Path,
    socket_dir: &Path,
    port: u16,
) -> Result<TestServer, String> {
    let mut child = pg_command(Path::new("sh"))
        .arg("-c")
        .arg(WATCHDOG)
        .arg("sh")
        .arg(bin)
        .arg(data)
        .arg(socket_dir)
        .arg(port.to_string())
        .arg(root)
        .arg(if DURABLE.load(Ordering::SeqCst) {
            ""
        } else {
            FAST_UNSAFE
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start postgres: {e}"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| "the watchdog has no stdin".to_owned())?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut log = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut log);
            }
            return Err(format!("postgres exited ({status}) while starting: {log}"));
        }
        if is_ready(bin, socket_dir, port) {
            // The server's log goes nowhere from now on; keep the pipe from filling.
            if let Some(stderr) = child.stderr.take() {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut { stderr }, &mut std::io::sink());
                });
            }
            return Ok(TestServer {
                port,
                socket_dir: socket_dir.to_path_buf(),
                ca_file: PathBuf::new(),
                root: root.to_path_buf(),
                bin: bin.to_path_buf(),
                _watchdog: Mutex::new((child, stdin)),
            });
        }
        if Instant::now() > deadline {
            drop(stdin);
            let _ = child.wait();
            return Err(format!(
                "postgres did not answer within {START_TIMEOUT:?} on port {port}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
