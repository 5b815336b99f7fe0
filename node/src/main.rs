//! `node`: joins Cordon networks and serves them.
//!
//! Note: Node.js installs a binary with the same name. Call this one by path
//! (`target/release/node`), never through `PATH`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cordon_host::control::{call_blocking, socket_path};
use cordon_host::datadir::DataDir;
use cordon_node::api::{CallCommand, CallResult, FindResult, PeerEntry, Reloaded, Request, Status};
use cordon_node::config::{DaemonFlags, NoSeednode, NodeFile};
use cordon_protocol::NetworkName;
use serde::de::DeserializeOwned;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    name = "node",
    version,
    about = "Cordon node: join permissioned networks and serve their members",
    after_help = "Node.js also installs a `node` binary: run this one by its path, e.g. target/release/node."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the node's identity key in a data directory (0700; key 0600).
    Init {
        /// Data directory.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Join networks and serve until interrupted (SIGINT/SIGTERM).
    ///
    /// Settings come from --config FILE (see node/node.example.toml) and the flags below,
    /// which override the file; without a file, --data, --networks and --network are needed.
    Run {
        #[command(flatten)]
        daemon: DaemonFlags,
        /// Network to join; repeat for several. Overrides `networks`.
        #[arg(long = "network", value_name = "NAME")]
        network: Vec<NetworkName>,
        /// An invite code for one network with the `invite` join policy, as NETWORK=CODE;
        /// repeat for several. Sent only to that network's seednodes, with the first join
        /// request. Prefer --invite-file or CORDON_INVITE (comma-separated): other users can
        /// read a process's arguments. Overrides `[invites]` for the networks it names.
        #[arg(
            long,
            value_name = "NETWORK=CODE",
            env = "CORDON_INVITE",
            hide_env_values = true,
            value_delimiter = ','
        )]
        invite: Vec<String>,
        /// A file holding one network's invite code, as NETWORK=PATH (the file private to its
        /// owner); repeat for several. Overrides `[invite_files]` for the networks it names.
        #[arg(
            long,
            value_name = "NETWORK=PATH",
            value_parser = cordon_node::invite::parse_file_arg
        )]
        invite_file: Vec<(NetworkName, PathBuf)>,
        /// Seconds a connection may stay unauthenticated. Overrides `limits.auth_timeout`.
        #[arg(long)]
        auth_timeout_secs: Option<u64>,
        /// Datalog policy mapping roles to remote commands. Overrides `policy`.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Validate the configuration and exit without starting (same as `check-config`).
        #[arg(long)]
        check: bool,
    },
    /// Validate a config file (and the files it names) and exit: non-zero with the file, key
    /// and fix when something is wrong.
    CheckConfig {
        /// The config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the running node's status.
    Status {
        /// Data directory of the running node.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read the running node's descriptor and --filter file. New anchors are trusted at
    /// once; peers whose token chains only to a removed anchor are disconnected. Settings that
    /// need a restart are named.
    Reload {
        /// Data directory of the running node.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
    },
    /// Call a remote command on a peer: ping | info | peers | echo TEXT | dht_get KEY |
    /// dht_put KEY VALUE. Refusals print their reason code and exit non-zero.
    Call {
        /// Data directory of the running node.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
        /// Network to call in; needed only when the peer shares several with us.
        #[arg(long)]
        network: Option<NetworkName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The peer to call.
        peer: libp2p::PeerId,
        /// The command.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Look a peer up through a network's members (Kademlia): where it is, how many members
    /// were asked, how long it took. Exits non-zero when no member knows it.
    Find {
        /// Data directory of the running node.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
        /// Network to look in; needed only when the node is in several.
        #[arg(long)]
        network: Option<NetworkName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The peer to look up.
        peer: libp2p::PeerId,
    },
    /// Audit-trail tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the peers in the running node's routing tables.
    Peers {
        /// Data directory of the running node.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
        /// Only this network.
        #[arg(long)]
        network: Option<NetworkName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the hash chain of <data>/audit.log (and its rotated files); names the first
    /// edited, removed, reordered or malformed line. Works whether or not the node runs.
    Verify {
        /// Data directory.
        #[arg(long, env = "CORDON_DATA")]
        data: PathBuf,
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { data, json } => {
            let (_, key) = DataDir::init(&data)?;
            if json {
                println!(
                    "{}",
                    json!({"peer_id": key.peer_id().to_string(), "public_key": key.public().to_string()})
                );
            } else {
                println!(
                    "node identity created in {}\npeer id: {}",
                    data.display(),
                    key.peer_id()
                );
            }
            Ok(())
        }
        Command::Run {
            daemon,
            network,
            invite,
            invite_file,
            auth_timeout_secs,
            policy,
            check,
        } => {
            let (mut file, source) = daemon.load::<NoSeednode>()?;
            if !network.is_empty() {
                file.networks = network;
            }
            // Parsed here rather than by clap, whose errors quote the value (the code).
            let invite = invite
                .iter()
                .map(|arg| cordon_node::invite::parse_code_arg(arg))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--invite / CORDON_INVITE: {e}"))?;
            let mut named = std::collections::BTreeSet::new();
            for network in invite
                .iter()
                .map(|(n, _)| n)
                .chain(invite_file.iter().map(|(n, _)| n))
            {
                anyhow::ensure!(
                    named.insert(network.clone()),
                    "two invites given for {network} (--invite / --invite-file / CORDON_INVITE); \
                     give one"
                );
            }
            for (network, path) in invite_file {
                file.invites.remove(&network);
                file.invite_files.insert(network, path);
            }
            for (network, code) in invite {
                file.invite_files.remove(&network);
                file.invites.insert(network, code);
            }
            if let Some(secs) = auth_timeout_secs {
                file.limits.auth_timeout = Duration::from_secs(secs);
            }
            if policy.is_some() {
                file.policy = policy;
            }
            file.validate()?;
            let config = file.node_config(&source, None)?;
            if check {
                println!("{}", cordon_node::config::check(&config)?);
                return Ok(());
            }
            init_tracing();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(cordon_node::run(config, shutdown_signal()))
        }
        Command::CheckConfig { config } => {
            let file = NodeFile::load(&config)?;
            let node = file.node_config(&config.display().to_string(), None)?;
            println!("{}", cordon_node::config::check(&node)?);
            Ok(())
        }
        Command::Reload { data } => {
            let reloaded: Reloaded = call(&data, &Request::Reload {})?;
            print!("{}", reloaded.text());
            Ok(())
        }
        Command::Call {
            data,
            network,
            json,
            peer,
            command,
            args,
        } => {
            let command = CallCommand::from_words(&command, &args).map_err(anyhow::Error::msg)?;
            let request = Request::Call {
                peer,
                network,
                command,
            };
            let result: CallResult = call_with_timeout(&data, &request, CALL_TIMEOUT)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!("{}", render_call(&result));
            }
            Ok(())
        }
        Command::Find {
            data,
            network,
            json,
            peer,
        } => {
            let request = Request::Find { network, peer };
            let found: FindResult = call_with_timeout(&data, &request, CALL_TIMEOUT)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else {
                print_found(&found);
            }
            if !found.found {
                anyhow::bail!("{}", found.failure());
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { data }) => {
            println!("{}", cordon_host::audit::verify_data_dir(&data)?);
            Ok(())
        }
        Command::Status { data, json } => {
            let status: Status = call(&data, &Request::Status {})?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        Command::Peers {
            data,
            network,
            json,
        } => {
            let peers: Vec<PeerEntry> = call(&data, &Request::Peers { network })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                print_peers(&peers);
            }
            Ok(())
        }
    }
}

/// How long `node call` waits: a call may first have to reach its peer (up to 20 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn call<T: DeserializeOwned>(data: &std::path::Path, request: &Request) -> anyhow::Result<T> {
    call_with_timeout(data, request, Duration::from_secs(10))
}

fn call_with_timeout<T: DeserializeOwned>(
    data: &std::path::Path,
    request: &Request,
    timeout: Duration,
) -> anyhow::Result<T> {
    Ok(call_blocking(&socket_path(data), request, timeout)?)
}

/// One readable line per answer of `node call`.
fn render_call(result: &CallResult) -> String {
    match result {
        CallResult::Pong => "pong".into(),
        CallResult::Echo { payload } => payload.display(),
        CallResult::Record { record: None } => "no record".into(),
        CallResult::Record {
            record: Some(record),
        } => record.value.display(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn print_status(s: &Status) {
    println!("peer id:     {}", s.peer_id);
    for a in &s.listen {
        println!("listening:   {a}");
    }
    println!("connections: {}", s.connections);
    println!();
    println!(
        "{:<16} {:<9} {:>8} {:>9} {:>8}",
        "NETWORK", "STATE", "ROUTING", "VERIFIED", "REQUEST"
    );
    for n in &s.networks {
        println!(
            "{:<16} {:<9} {:>8} {:>9} {:>8}",
            n.name.as_str(),
            n.state,
            n.routing_table,
            n.verified_peers,
            n.pending_request
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
}

fn print_found(f: &FindResult) {
    let verdict = if f.found { "found" } else { "not found" };
    println!(
        "{} {verdict} in {} after {} ms",
        f.peer, f.network, f.elapsed_ms
    );
    for a in &f.addrs {
        println!("address:  {a}");
    }
    if f.in_table {
        println!("path:     1 hop (in this node's routing table)");
    } else {
        println!(
            "path:     at least {} hops (not in this node's routing table; members named it)",
            f.min_hops
        );
    }
    println!(
        "asked:    {} members ({} answered, {} did not)",
        f.asked, f.answered, f.failed
    );
    if let Some(problem) = &f.problem {
        println!("problem:  {problem}");
    }
    for (i, p) in f.closest.iter().enumerate() {
        println!("closest {:>2}: {p}", i + 1);
    }
}

fn print_peers(peers: &[PeerEntry]) {
    println!(
        "{:<10} {:<54} {:<9} ADDRESS",
        "NETWORK", "PEER", "CONNECTED"
    );
    for p in peers {
        println!(
            "{:<10} {:<54} {:<9} {}",
            p.network.as_str(),
            p.peer,
            if p.connected { "yes" } else { "no" },
            p.addrs.first().map_or("-", String::as_str)
        );
    }
}
