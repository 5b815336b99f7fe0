//! `seednode run`: the config file (`seednode.toml`), its checks, and the daemon itself.
//!
//! A seednode's config is the node's ([`cordon_node::config::DaemonFile`]) with a `[seednode]`
//! table: the delegations it serves, `[seednode.store]` ([`StoreLimits`]),
//! `[seednode.postgres]` ([`PostgresOptions`]: keep the state in a PostgreSQL database shared
//! with other seednodes instead of `<data>/seednode.db`) and `[seednode.service]`
//! ([`ServiceConfig`]). It serves exactly the networks of its
//! delegations. Everything is checked before the swarm starts, so a bad file fails fast with
//! the file, key and fix.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, anyhow, bail};
use cordon_host::config::{Invalid, resolve};
use cordon_host::datadir::DataDir;
use cordon_membership::{IssueError, Issuer, Refusal, SecretKey, Verifier};
use cordon_node::NodeConfig;
use cordon_node::config::{DaemonFile, Section};
use cordon_protocol::NetworkName;
use serde::{Deserialize, Serialize};

use crate::anchor;
use crate::any_store::AnyStore;
use crate::service::{SeedService, ServiceConfig};
use crate::store::{PostgresOptions, PostgresStore, SqliteStore, StoreLimits};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "seednode.db";

/// The `[seednode]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeednodeSection {
    /// Delegation files (from `seednode anchor delegate`), one per network served. Required
    /// here or as `--delegation`.
    pub delegations: Vec<PathBuf>,
    /// `[seednode.store]`: bounds on the join-request queue.
    pub store: StoreLimits,
    /// `[seednode.postgres]`: when present, the state lives in this PostgreSQL database
    /// (shared by several seednodes of a network) instead of `<data>/seednode.db`. Default:
    /// absent (SQLite).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresOptions>,
    /// `[seednode.service]`: default roles, label and invite-code sizes.
    pub service: ServiceConfig,
}

impl Section for SeednodeSection {
    fn validate(&self) -> Result<(), Invalid> {
        self.store.validate().map_err(|e| e.within("store"))?;
        if let Some(postgres) = &self.postgres {
            postgres.validate().map_err(|e| e.within("postgres"))?;
        }
        self.service.validate().map_err(|e| e.within("service"))
    }

    fn resolve_paths(&mut self, file: &Path) {
        for p in &mut self.delegations {
            *p = resolve(file, p);
        }
        if let Some(postgres) = self.postgres.as_mut() {
            for path in [&mut postgres.password_file, &mut postgres.ca_file]
                .into_iter()
                .flatten()
            {
                *path = resolve(file, path);
            }
        }
    }
}

/// The seednode's config file.
pub type SeedFile = DaemonFile<SeednodeSection>;

/// Everything a seednode needs, checked.
#[derive(Debug)]
pub struct Prepared {
    /// The node configuration (networks: those of the delegations).
    pub config: NodeConfig,
    /// The seednode's identity.
    pub identity: SecretKey,
    /// One issuer per delegation.
    pub issuers: Vec<Issuer>,
    /// Where the SQLite database lives (unused when `[seednode.postgres]` is set).
    pub database: PathBuf,
}

/// Opens the data directory, reads and checks every delegation against the descriptor, and
/// builds the node configuration. `source` names the config in messages.
pub fn prepare(file: &SeedFile, source: &str) -> anyhow::Result<Prepared> {
    let seed = &file.seednode;
    if seed.delegations.is_empty() {
        bail!(
            "no delegation: list them in `[seednode] delegations` of {source} or pass \
             --delegation FILE (create one with `seednode anchor delegate`)"
        );
    }
    let data = file
        .data
        .clone()
        .ok_or_else(|| anyhow!("no data directory: set `data` in {source} or pass --data"))?;
    let (_, identity) = DataDir::open(&data).with_context(|| {
        format!(
            "opening data directory {} (create it with `seednode init --data {}`)",
            data.display(),
            data.display()
        )
    })?;
    let (descriptor_path, descriptor) = file.descriptor(source)?;
    let access = descriptor.access_list().with_context(|| {
        format!(
            "building the access list from {}",
            descriptor_path.display()
        )
    })?;
    let verifier = Verifier::new(
        cordon_membership::VerifierConfig::from(&file.verifier),
        access,
    );
    let now = SystemTime::now();
    let mut issuers = Vec::with_capacity(seed.delegations.len());
    let mut networks: Vec<NetworkName> = Vec::with_capacity(seed.delegations.len());
    for path in &seed.delegations {
        let bytes = anchor::read_token_file(path)?;
        let issuer = Issuer::new(&bytes, &verifier, identity.clone(), now)
            .map_err(|e| delegation_error(path, &descriptor_path, &identity, e))?;
        let network = NetworkName::new(issuer.network())
            .with_context(|| format!("delegation {} names an invalid network", path.display()))?;
        if networks.contains(&network) {
            bail!(
                "two delegations for network {network} (the second is {}); pass one per network",
                path.display()
            );
        }
        networks.push(network);
        issuers.push(issuer);
    }
    let config = file.node_config_with(&descriptor_path, descriptor, Some(networks), source)?;
    Ok(Prepared {
        config,
        identity,
        issuers,
        database: data.join(DATABASE_FILE),
    })
}

/// Checks a seednode config without starting anything; returns a one-line summary.
pub fn check(file: &SeedFile, source: &str) -> anyhow::Result<String> {
    let prepared = prepare(file, source)?;
    cordon_node::config::check(&prepared.config)?;
    // The service's own checks (default roles against each delegation, and so on).
    SeedService::new(
        SqliteStore::open_in_memory(file.seednode.store.clone())?,
        prepared.issuers,
        &prepared.config.descriptor,
        file.seednode.service.clone(),
    )?;
    Ok(format!(
        "configuration ok: seednode {} serves {} from {}",
        prepared.identity.peer_id(),
        prepared
            .config
            .networks
            .iter()
            .map(NetworkName::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        prepared.config.data_dir.display()
    ))
}

/// Runs the seednode until `shutdown` resolves. Must run inside a tokio runtime.
pub async fn run(
    file: &SeedFile,
    source: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::fault::arm_from_env();
    let Prepared {
        config,
        identity,
        issuers,
        database,
    } = prepare(file, source)?;
    let limits = file.seednode.store.clone();
    let store = match &file.seednode.postgres {
        Some(options) => {
            let store = PostgresStore::open(options, limits).await?;
            tracing::info!(postgres = ?store.options(), "seednode state in PostgreSQL");
            AnyStore::from(store)
        }
        None => AnyStore::from(SqliteStore::open(&database, limits)?),
    };
    let data_dir = DataDir::open(&config.data_dir)
        .map(|(d, _)| d)
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let held = config
        .networks
        .iter()
        .map(|n| {
            let version = cordon_node::revocations::held_version(&data_dir, n, &identity.public());
            (n.clone(), version)
        })
        .collect();
    let service = SeedService::new(
        store,
        issuers,
        &config.descriptor,
        file.seednode.service.clone(),
    )?
    .with_head_signer(identity.libp2p_keypair(), held)?;
    tracing::info!(
        peer = %identity.peer_id(),
        networks = ?config.networks.iter().map(NetworkName::as_str).collect::<Vec<_>>(),
        "seednode starting"
    );
    let handle = service.spawn();
    cordon_node::run_with(config, identity, Some(handle), shutdown).await
}

/// Explains why a delegation cannot be used by this seednode, and how to fix it.
fn delegation_error(
    path: &Path,
    descriptor: &Path,
    identity: &SecretKey,
    error: IssueError,
) -> anyhow::Error {
    let file = path.display();
    match error {
        IssueError::Delegation(Refusal::WrongSubject { token_subject }) => anyhow!(
            "delegation {file} was issued to seednode {token_subject}, not to this seednode \
             (peer id {}, public key {}); ask the anchor operator for \
             `seednode anchor delegate --seednode {}`",
            identity.peer_id(),
            identity.public(),
            identity.public()
        ),
        IssueError::Delegation(Refusal::UnknownNetwork { network }) => anyhow!(
            "delegation {file} is for network {network:?}, which is not in the descriptor {}; \
             add a [[network]] entry for it with its anchor key",
            descriptor.display()
        ),
        IssueError::Delegation(
            refusal @ (Refusal::UnknownAnchor { .. } | Refusal::AnchorNotForNetwork { .. }),
        ) => anyhow!(
            "delegation {file} is not signed by an anchor the descriptor {} trusts for its \
             network ({refusal}); check that the network is listed there with this anchor's \
             public key (anchor.pub)",
            descriptor.display()
        ),
        IssueError::Delegation(refusal @ Refusal::DelegationExpired { .. }) => anyhow!(
            "delegation {file} has expired ({refusal}); ask the anchor operator for a new one"
        ),
        other => anyhow!("delegation {file} cannot be used: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../seednode.example.toml");

    #[test]
    fn the_example_documents_every_key_with_its_default() {
        let example: SeedFile = cordon_host::config::parse_toml(Path::new("x"), EXAMPLE).unwrap();
        let mut expected = SeedFile {
            data: Some("seed".into()),
            descriptor: Some("networks.toml".into()),
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            ..SeedFile::default()
        };
        expected.seednode.delegations = vec!["mainnet.delegation".into()];
        assert_eq!(example, expected);
        // A seednode serves its delegations' networks: `networks` does not apply.
        let mut missing =
            cordon_host::config::undocumented_keys(&SeedFile::default(), EXAMPLE).unwrap();
        missing.retain(|k| k != "networks");
        assert!(
            missing.is_empty(),
            "keys missing from seednode.example.toml: {missing:?}"
        );
    }

    #[test]
    fn the_example_documents_every_postgres_key_commented_out() {
        // The table is optional, so it stands commented out; uncommented it parses to the
        // defaults (with an example url and password file) and names every key.
        let block: String = EXAMPLE
            .lines()
            .skip_while(|line| *line != "# [seednode.postgres]")
            .skip(1)
            .take_while(|line| line.starts_with('#'))
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| {
                line.split_once(" = ")
                    .is_some_and(|(key, _)| !key.contains(' '))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let parsed: PostgresOptions =
            cordon_host::config::parse_toml(Path::new("x"), &block).unwrap();
        let expected = PostgresOptions {
            url: "postgres://cordon@db.example:5432/cordon".to_owned(),
            password_file: Some("postgres.password".into()),
            tls: crate::pg_tls::PgTls::VerifyFull,
            ca_file: Some("postgres-ca.pem".into()),
            ..PostgresOptions::default()
        };
        assert_eq!(parsed, expected);
        let missing = cordon_host::config::undocumented_keys(&expected, &block).unwrap();
        assert!(
            missing.is_empty(),
            "[seednode.postgres] keys missing from seednode.example.toml: {missing:?}"
        );
        parsed.validate().unwrap();
    }

    #[test]
    fn seednode_values_are_checked_with_their_full_key() {
        let err = |text: &str| {
            let file: SeedFile =
                cordon_host::config::parse_toml(Path::new("s.toml"), text).unwrap();
            file.validate().unwrap_err().to_string()
        };
        assert_eq!(
            err("[seednode.store]\nmax_pending_per_network = 0\n"),
            "seednode.store.max_pending_per_network must be between 1 and 10000, got 0"
        );
        assert!(
            err("[seednode.service]\ninvite_code_bytes = 4\n")
                .starts_with("seednode.service.invite_code_bytes")
        );
        assert!(
            err("[seednode.service]\ndefault_roles = [\"Bad Role\"]\n").contains("not a role name")
        );
        let message = err("[seednode.postgres]\nurl = \"postgres://u:hunter2@db/x\"\n");
        assert!(
            message.starts_with("seednode.postgres.url holds a password"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            err("[seednode.postgres]\nurl = \"postgres://u@db/x\"\npool_size = 0\n")
                .starts_with("seednode.postgres.pool_size")
        );
    }
}
