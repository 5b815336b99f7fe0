//! `seednode`: issues membership tokens and is the operators' command line.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cordon_membership::{PublicKey, SecretKey};
use cordon_seednode::anchor;

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
}

#[derive(Debug, Subcommand)]
enum AnchorCommand {
    /// Create a trust-anchor key for a network and print its public key.
    New {
        /// Network the anchor roots (e.g. mainnet).
        #[arg(long)]
        network: String,
        /// Directory to write anchor.key (0600) and anchor.pub into.
        #[arg(long)]
        out: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign a delegation letting a seednode issue memberships of a network.
    Delegate {
        /// The anchor's secret key file.
        #[arg(long)]
        anchor_key: PathBuf,
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
    match cli.command {
        Command::Anchor(AnchorCommand::New { network, out, json }) => {
            let created = anchor::new_anchor(&network, &out)?;
            print(json, &created, |c| {
                format!(
                    "created trust anchor for {}\npublic key: {}\nkey id:     {}\nsecret key: {} (mode 0600; keep it offline)",
                    c.network,
                    c.public_key,
                    c.key_id,
                    c.key_file.display()
                )
            })
        }
        Command::Anchor(AnchorCommand::Delegate {
            anchor_key,
            seednode,
            network,
            ttl,
            roles,
            max_lifetime,
            out,
            json,
        }) => {
            let written = anchor::delegate(
                &anchor::Delegate {
                    anchor_key: &anchor_key,
                    seednode,
                    network: &network,
                    ttl,
                    roles,
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
    }
}
