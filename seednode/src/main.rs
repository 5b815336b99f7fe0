//! `seednode`: issues membership tokens and is the operators' command line.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use cordon_membership::{KdfParams, PublicKey, SecretKey};
use cordon_node::config::DaemonFlags;
use cordon_protocol::NetworkName;
use cordon_seednode::anchor::{self, AnchorKeyProtection};
use cordon_seednode::daemon::{self, SeedFile, SeednodeSection};
use cordon_seednode::migrate;
use cordon_seednode::operator::{OperatorCommand, RevokeTarget};
use cordon_seednode::passphrase::PassphraseSource;
use cordon_seednode::pg_tls::PgTls;
use cordon_seednode::store::PostgresOptions;

#[derive(Debug, Parser)]
#[command(
    name = "seednode",
    version,
    about = "Cordon seednode: trust anchors, join approval and token issuing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trust-anchor tooling (the anchor key may stay offline).
    #[command(subcommand)]
    Anchor(AnchorCommand),
    /// Create this seednode's identity key in a data directory.
    Init {
        /// Data directory (created 0700).
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the seednode daemon: serve join requests, issue tokens, answer the operator CLI.
    ///
    /// Settings come from --config FILE (see seednode/seednode.example.toml) and the flags,
    /// which override the file. Stops cleanly on Ctrl-C or SIGTERM. Logs go to stderr; set
    /// RUST_LOG (default: info).
    Run(RunArgs),
    /// Validate a config file (and the files it names: descriptor, delegations, data
    /// directory, filter, policy) and exit: non-zero with the file, key and fix when something
    /// is wrong.
    CheckConfig {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// List pending join requests.
    Pending {
        /// Only requests for this network.
        #[arg(long)]
        network: Option<NetworkName>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a pending join request: issue its token and deliver it.
    Approve {
        /// The request id (from `seednode pending`).
        id: u64,
        /// A role to grant (repeat for several). Default: the seednode's default roles (member).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// An explicit right to grant on top of the roles (e.g. dht_put; repeat for several).
        /// The delegation must allow it (`seednode anchor delegate --rights`).
        #[arg(long = "right", value_name = "RIGHT")]
        rights: Vec<String>,
        /// Token lifetime (e.g. 30d, 12h). Default: the network's token_lifetime, capped by the
        /// delegation.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deny a pending join request.
    ///
    /// With --all, --older-than or --label instead of an id, denies in one step every pending
    /// request matching all the criteria given (e.g. a flood of requests from throwaway
    /// identities: `seednode deny --label flood`, `seednode deny --older-than 7d`).
    #[command(group(
        clap::ArgGroup::new("which").required(true).multiple(true)
            .args(["id", "all", "older_than", "label"])
    ))]
    Deny {
        /// The request id (from `seednode pending`).
        #[arg(conflicts_with_all = ["all", "older_than", "label", "network"])]
        id: Option<u64>,
        /// Every pending request (of --network, if given).
        #[arg(long)]
        all: bool,
        /// Only requests at least this old (e.g. 7d, 12h).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR")]
        older_than: Option<Duration>,
        /// Only requests whose label is exactly TEXT.
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
        /// Only requests for this network.
        #[arg(long)]
        network: Option<NetworkName>,
        /// A note sent to the requesting node (printable text, at most 256 bytes).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List current members: the newest valid token of each peer and network.
    Members {
        /// Only members of this network.
        #[arg(long)]
        network: Option<NetworkName>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create an invite code for a network with `join = "invite"` (shown only once).
    Invite {
        /// The network the code admits to.
        #[arg(long)]
        network: NetworkName,
        /// How many joins the code admits.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long the code is valid (e.g. 1d, 2h).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DUR", default_value = "1d")]
        ttl: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Publish a revocation signed by the network's trust anchor (`seednode anchor
    /// revoke-delegation` writes one): this seednode checks it, enforces it and pushes it to
    /// the network's members, which forward it to theirs.
    PublishRevocation {
        /// The revocation file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke memberships: all tokens of a peer, or one token by id.
    ///
    /// The revocation is recorded, signed into a new revocation head for the network and
    /// enforced by this seednode at once; the head is pushed to every member connected to it
    /// and forwarded member to member, and members that were offline pull it on their next
    /// connection. Each member then closes the revoked peer's connection, drops it from its
    /// routing table and refuses it as `revoked`.
    #[command(group(
        clap::ArgGroup::new("what").required(true).args(["target", "peer", "token_id"])
    ))]
    Revoke {
        /// A peer id or a token id (a number, from `seednode members`); same as --peer or
        /// --token-id.
        #[arg(value_name = "PEER_OR_TOKEN")]
        target: Option<String>,
        /// Revoke every unrevoked token of this peer.
        #[arg(long, value_name = "PEER")]
        peer: Option<libp2p::PeerId>,
        /// With a peer: only its tokens for this network.
        #[arg(long, value_name = "NAME")]
        network: Option<NetworkName>,
        /// Revoke this one token (ids are listed by `seednode members`).
        #[arg(long, value_name = "N", conflicts_with = "network")]
        token_id: Option<u64>,
        /// Why (kept in the revocation record).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Audit-trail tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Store tools (the seednode's database).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Re-read the running seednode's descriptor and filter rules, as `node reload` does: new
    /// anchors are trusted at once, peers whose token chains only to a removed anchor are
    /// disconnected. A new delegation (an anchor rotation) needs a restart with it.
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the running seednode's status: networks, connections, queue and token counts.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options every operator command shares.
#[derive(Debug, Args)]
struct ClientArgs {
    /// Data directory of the running seednode (its control socket lives there).
    #[arg(long, env = "CORDON_DATA", value_name = "DIR")]
    data: PathBuf,
    /// Print the daemon's answer as JSON (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of `seednode run`.
#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    daemon: DaemonFlags,
    /// A delegation for this seednode (from `seednode anchor delegate`); repeat once per
    /// network served. Overrides `[seednode] delegations`.
    #[arg(long = "delegation", value_name = "FILE")]
    delegations: Vec<PathBuf>,
    /// Keep the seednode's state in this PostgreSQL database, shared with the network's other
    /// seednodes (postgres://USER@HOST:PORT/DB, no password: see `[seednode.postgres]`),
    /// instead of <data>/seednode.db. Overrides `[seednode.postgres] url`.
    #[arg(long = "store", value_name = "URL")]
    store: Option<String>,
    /// Validate the configuration and exit without starting (same as `check-config`).
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Subcommand)]
enum AnchorCommand {
    /// Create a trust-anchor key for a network and print its public key.
    ///
    /// The key file is encrypted with a passphrase (Argon2id and XChaCha20-Poly1305) unless
    /// --insecure-plaintext is given. The passphrase comes from --passphrase-file, else the
    /// environment variable CORDON_ANCHOR_PASSPHRASE, else a prompt (typed twice) when standard
    /// input is a terminal; never from an argument.
    New {
        /// Network the anchor roots (e.g. mainnet).
        #[arg(long)]
        network: String,
        /// Directory to write anchor.key and anchor.pub into (both 0600, the directory 0700).
        #[arg(long)]
        out: PathBuf,
        /// File whose first line is the passphrase (must be owner-only, e.g. mode 0600).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Write the key unencrypted, in the plaintext format (tests and demos only: anyone who
        /// can read the file can sign delegations).
        #[arg(long, conflicts_with = "passphrase_file")]
        insecure_plaintext: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign a delegation letting a seednode issue memberships of a network.
    ///
    /// An encrypted anchor key's passphrase comes from --passphrase-file, else
    /// CORDON_ANCHOR_PASSPHRASE, else a prompt on the terminal; a plaintext key needs none.
    Delegate {
        /// The anchor's secret key file (encrypted, or plaintext from --insecure-plaintext or
        /// an older release).
        #[arg(long)]
        anchor_key: PathBuf,
        /// File whose first line is the anchor key's passphrase (owner-only).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The seednode's public key (`ed25519/<hex>`, printed by `seednode init`).
        #[arg(long)]
        seednode: PublicKey,
        /// Network to delegate.
        #[arg(long)]
        network: String,
        /// How long the delegation lasts (e.g. 365d).
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Roles the seednode may grant, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "member")]
        roles: Vec<String>,
        /// Explicit rights the seednode may grant on top of roles, comma separated
        /// (e.g. dht_put); none by default.
        #[arg(long, value_delimiter = ',')]
        rights: Vec<String>,
        /// Longest membership the seednode may issue (e.g. 30d).
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        max_lifetime: Duration,
        /// Output token file; a base64 copy is written beside it as <out>.b64.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a seednode's delegation, and with it every membership that seednode issued
    /// under it. Works offline: it writes a revocation signed by the anchor key (a new version
    /// of the anchor's revocation head, with every delegation it revoked so far); hand the file
    /// to any seednode of the network with `seednode publish-revocation FILE`, which applies it
    /// and pushes it to the members. An encrypted anchor key's passphrase comes from
    /// --passphrase-file, else CORDON_ANCHOR_PASSPHRASE, else a prompt on the terminal.
    RevokeDelegation {
        /// The anchor's secret key file (encrypted or plaintext).
        #[arg(long)]
        anchor_key: PathBuf,
        /// File whose first line is the anchor key's passphrase (owner-only).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// The delegation file to revoke (as written by `seednode anchor delegate`).
        #[arg(long)]
        delegation: PathBuf,
        /// Where to write the signed revocation (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// The anchor's revocation state for the network. Default:
        /// revocations-<network>.update beside the anchor key; keep it with the key.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print<T: serde::Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", text(value));
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (command, client) = match cli.command {
        Command::Run(args) => return run_daemon(args),
        Command::CheckConfig { config } => {
            let file = SeedFile::load(&config)?;
            println!("{}", daemon::check(&file, &config.display().to_string())?);
            return Ok(());
        }
        Command::Pending { network, client } => (OperatorCommand::Pending { network }, client),
        Command::Approve {
            id,
            roles,
            rights,
            ttl,
            client,
        } => (
            OperatorCommand::Approve {
                id,
                roles,
                rights,
                ttl,
            },
            client,
        ),
        Command::Deny {
            id,
            all: _,
            older_than,
            label,
            network,
            reason,
            client,
        } => match id {
            Some(id) => (OperatorCommand::Deny { id, reason }, client),
            None => (
                OperatorCommand::DenyPending {
                    network,
                    older_than,
                    label,
                    reason,
                },
                client,
            ),
        },
        Command::Members { network, client } => (OperatorCommand::Members { network }, client),
        Command::Invite {
            network,
            uses,
            ttl,
            client,
        } => (
            OperatorCommand::Invite {
                network,
                uses: Some(uses),
                ttl: Some(ttl),
            },
            client,
        ),
        Command::Revoke {
            target,
            peer,
            network,
            token_id,
            reason,
            client,
        } => {
            let target = match (target, peer, token_id) {
                (_, _, Some(id)) => RevokeTarget::Token(id),
                (_, Some(peer), None) => RevokeTarget::Peer { peer, network },
                (Some(text), None, None) => match text.parse::<u64>() {
                    Ok(_) if network.is_some() => {
                        bail!("--network applies only when revoking a peer, not a token id")
                    }
                    Ok(id) => RevokeTarget::Token(id),
                    Err(_) => RevokeTarget::Peer {
                        peer: text.parse().map_err(|_| {
                            anyhow!(
                                "{text:?} is neither a token id nor a peer id; pass a number \
                                 from `seednode members` or a peer id (12D3KooW...)"
                            )
                        })?,
                        network,
                    },
                },
                (None, None, None) => bail!("name a peer (--peer PEER) or a token (--token-id N)"),
            };
            (OperatorCommand::Revoke { target, reason }, client)
        }
        Command::Status { client } => (OperatorCommand::Status, client),
        Command::Reload { client } => (OperatorCommand::Reload, client),
        Command::PublishRevocation { file, client } => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("reading revocation file {}", file.display()))?;
            (OperatorCommand::PublishRevocation { update: bytes }, client)
        }
        Command::Store(StoreCommand::Migrate {
            from,
            to,
            password_file,
            tls,
            ca_file,
            json,
        }) => {
            let tls = TlsArgs { tls, ca_file };
            return store_migrate(&from, &to, password_file, tls, json);
        }
        Command::Audit(AuditCommand::Verify { data }) => {
            println!("{}", cordon_host::audit::verify_data_dir(&data)?);
            return Ok(());
        }
        local @ (Command::Anchor(_) | Command::Init { .. }) => return run_local(local),
    };
    println!("{}", command.run(&client.data, client.json, unix_now())?);
    Ok(())
}

/// Test-only knob: set to `1` to seal new anchor keys with cheap Argon2id parameters so
/// black-box tests stay fast. Named so that nobody sets it by accident; a warning says it is on,
/// and the file's header line shows the weak parameters.
const WEAK_KDF_FOR_TESTS_ENV: &str = "CORDON_ANCHOR_INSECURE_KDF_FOR_TESTS";

/// The Argon2id cost for a new anchor key: the strong default unless the test knob is set.
fn anchor_kdf_params() -> KdfParams {
    if std::env::var_os(WEAK_KDF_FOR_TESTS_ENV).is_some_and(|v| v == "1") {
        eprintln!(
            "warning: {WEAK_KDF_FOR_TESTS_ENV}=1: sealing the anchor key with test-only Argon2id \
             parameters that make a stolen file cheap to brute-force"
        );
        KdfParams::insecure_for_tests()
    } else {
        KdfParams::default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `seednode run`: the config file and flags, checked, then the daemon.
fn run_daemon(args: RunArgs) -> anyhow::Result<()> {
    let (mut file, source) = args.daemon.load::<SeednodeSection>()?;
    if !args.delegations.is_empty() {
        file.seednode.delegations = args.delegations;
    }
    if let Some(url) = args.store {
        file.seednode
            .postgres
            .get_or_insert_with(Default::default)
            .url = url;
        file.validate()
            .context("checking --store (the PostgreSQL database url)")?;
    }
    if args.check {
        println!("{}", daemon::check(&file, &source)?);
        return Ok(());
    }
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        daemon::run(&file, &source, shutdown).await
    })
}

/// Resolves on Ctrl-C or SIGTERM.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, shutting down"),
            _ = terminate.recv() => tracing::info!("terminated, shutting down"),
        }
    })
}

/// Logs to stderr, filtered by RUST_LOG (default `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `seednode store ...`.
#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Copy a stopped seednode's SQLite store into a new, empty PostgreSQL database, so the
    /// network's seednodes can share it (`[seednode.postgres]` or `seednode run --store`).
    ///
    /// Copies every join request, issued token, revocation and invite with its id, and the
    /// revocation version, in one transaction (all or nothing), creating the schema; checks
    /// the row counts before committing and prints what it copied. The SQLite file is only
    /// read. Refuses a target that already holds seednode data, and a source whose seednode
    /// is still running (stop it first).
    Migrate {
        /// The SQLite store: sqlite:PATH (seednode.db in the stopped seednode's data directory).
        #[arg(long, value_name = "sqlite:PATH")]
        from: String,
        /// The PostgreSQL database: postgres://USER@HOST:PORT/DB (or postgres:KEY=VALUE ...),
        /// without a password.
        #[arg(long, value_name = "postgres:URL")]
        to: String,
        /// A file holding the target's password (first line; mode 0600). Default:
        /// PGPASSWORD, then PostgreSQL's passfile (PGPASSFILE or ~/.pgpass).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// TLS to the target, as `[seednode.postgres] tls`: verify-full (with --ca-file)
        /// checks the server's certificate; prefer and require do not.
        #[arg(long, value_enum, default_value = "prefer")]
        tls: PgTls,
        /// PEM certificates the target's certificate must chain to (with --tls verify-full).
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `seednode store migrate --tls --ca-file`.
struct TlsArgs {
    tls: PgTls,
    ca_file: Option<PathBuf>,
}

/// `seednode store migrate`: parses the two locations, then copies.
fn store_migrate(
    from: &str,
    to: &str,
    password_file: Option<PathBuf>,
    tls: TlsArgs,
    json: bool,
) -> anyhow::Result<()> {
    let Some(source) = from.strip_prefix("sqlite:").filter(|p| !p.is_empty()) else {
        bail!("--from {from:?} names no SQLite store; write --from sqlite:PATH");
    };
    let url = if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        to
    } else if let Some(rest) = to.strip_prefix("postgres:") {
        rest
    } else {
        bail!(
            "--to names no PostgreSQL database; write --to postgres://USER@HOST:PORT/DB \
             (without a password: use --password-file)"
        );
    };
    let options = PostgresOptions {
        url: url.to_owned(),
        password_file,
        tls: tls.tls,
        ca_file: tls.ca_file,
        ..PostgresOptions::default()
    };
    options
        .validate()
        .context("checking --to, --tls and --ca-file")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(migrate::sqlite_to_postgres(
        std::path::Path::new(source),
        &options,
    ))?;
    print(json, &summary, |s| s.to_string())
}

/// The subcommands that touch only local files.
#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of <data>/audit.log (and its rotated files); names the first
    /// edited, removed, reordered or malformed line. Works whether or not the daemon runs.
    Verify {
        /// Data directory.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
    },
}

fn run_local(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Anchor(AnchorCommand::New {
            network,
            out,
            passphrase_file,
            insecure_plaintext,
            json,
        }) => {
            let source = PassphraseSource::from_process(passphrase_file);
            let protection = if insecure_plaintext {
                AnchorKeyProtection::InsecurePlaintext
            } else {
                AnchorKeyProtection::Passphrase {
                    source: &source,
                    kdf: anchor_kdf_params(),
                }
            };
            let created = anchor::new_anchor(&network, &out, &protection)?;
            if !created.encrypted {
                eprintln!(
                    "warning: --insecure-plaintext: {} is NOT encrypted; anyone who can read it \
                     can sign delegations for {} (for tests and demos only)",
                    created.key_file.display(),
                    created.network
                );
            }
            print(json, &created, |c| {
                format!(
                    "created trust anchor for {}\npublic key: {}\nkey id:     {}\nsecret key: {} ({}; mode 0600; keep it offline)",
                    c.network,
                    c.public_key,
                    c.key_id,
                    c.key_file.display(),
                    if c.encrypted {
                        "encrypted with your passphrase"
                    } else {
                        "UNENCRYPTED"
                    }
                )
            })
        }
        Command::Anchor(AnchorCommand::Delegate {
            anchor_key,
            passphrase_file,
            seednode,
            network,
            ttl,
            roles,
            rights,
            max_lifetime,
            out,
            json,
        }) => {
            let written = anchor::delegate(
                &anchor::Delegate {
                    anchor_key: &anchor_key,
                    passphrase: &PassphraseSource::from_process(passphrase_file),
                    seednode,
                    network: &network,
                    ttl,
                    roles,
                    rights,
                    max_lifetime,
                    out: &out,
                },
                SystemTime::now(),
            )?;
            print(json, &written, |w| {
                format!(
                    "wrote delegation {} (base64: {})\nrevocation id: {}\nexpires at:    {} (unix seconds)",
                    w.token_file.display(),
                    w.base64_file.display(),
                    w.revocation_id,
                    w.expires_at
                )
            })
        }
        Command::Anchor(AnchorCommand::RevokeDelegation {
            anchor_key,
            passphrase_file,
            delegation,
            out,
            state,
            json,
        }) => {
            let written = anchor::revoke_delegation(
                &anchor::RevokeDelegation {
                    anchor_key: &anchor_key,
                    passphrase: &PassphraseSource::from_process(passphrase_file),
                    delegation: &delegation,
                    out: &out,
                    state: state.as_deref(),
                },
                SystemTime::now(),
            )?;
            print(json, &written, |w| {
                format!(
                    "revoked the {} delegation of seednode {} (revocation id {})\n\
                     anchor revocation head version {}, {} delegation(s) revoked\n\
                     wrote {} (publish it: seednode publish-revocation {})\n\
                     state: {} (keep it with the anchor key)",
                    w.network,
                    w.seednode,
                    w.revocation_id,
                    w.version,
                    w.entries,
                    w.out.display(),
                    w.out.display(),
                    w.state.display()
                )
            })
        }
        Command::Init { data, json } => {
            anchor::create_private_dir(&data)?;
            let path = data.join("identity.key");
            let key = SecretKey::generate();
            key.save_new(&path)
                .with_context(|| format!("initialising {}", data.display()))?;
            let info = serde_json::json!({
                "peer_id": key.peer_id().to_string(),
                "public_key": key.public().to_string(),
                "key_file": path,
            });
            print(json, &info, |_| {
                format!(
                    "seednode identity created\npeer id:    {}\npublic key: {} (give this to the anchor operator for `seednode anchor delegate --seednode`)",
                    key.peer_id(),
                    key.public()
                )
            })
        }
        operator => {
            bail!("internal error: {operator:?} is not a local command")
        }
    }
}
