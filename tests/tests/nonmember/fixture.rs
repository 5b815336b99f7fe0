//! A real local mainnet + testnet: anchors, one seednode each, two approved mainnet members,
//! and (with [`Options::dual_member`]) a member approved in both networks.
//!
//! Everything runs as real `seednode`/`node` processes on loopback, driven through their CLIs.
//! Daemons are killed when the fixture is dropped; their logs stay in the fixture's temp dir and
//! are printed (tails) when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cordon_membership::{AccessList, Issuer, NetworkTrust, PeerId, PublicKey, SecretKey};
use cordon_membership::{Verifier, VerifierConfig};
use cordon_tests::{bin, run_with_timeout};
use serde_json::Value;

/// How long any single wait may take.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A running daemon; killed on drop.
pub(crate) struct Daemon {
    pub(crate) label: String,
    child: Child,
    pub(crate) stderr: PathBuf,
    pub(crate) stdout: PathBuf,
}

impl Daemon {
    fn spawn(label: &str, binary: &str, args: &[&str], logs: &Path) -> Self {
        let stdout = logs.join(format!("{label}.out"));
        let stderr = logs.join(format!("{label}.err"));
        let child = Command::new(bin(binary))
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create stdout log"))
            .stderr(File::create(&stderr).expect("create stderr log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary} {args:?}: {e}"));
        Self {
            label: label.to_owned(),
            child,
            stderr,
            stdout,
        }
    }

    /// The daemon's stderr (its tracing log) with ANSI escapes removed.
    pub(crate) fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout`.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a CLI command (20 s cap) and parses its JSON output; `None` if it failed.
pub(crate) fn cli_json(binary: &str, args: &[&str]) -> Option<Value> {
    let run = run_with_timeout(binary, args, Duration::from_secs(20));
    if !run.ok {
        return None;
    }
    serde_json::from_str(&run.stdout).ok()
}

/// One running process of the overlay.
pub(crate) struct Proc {
    pub(crate) daemon: Daemon,
    pub(crate) data: PathBuf,
    pub(crate) peer: PeerId,
    /// A listen address with `/p2p/<peer>`.
    pub(crate) addr: String,
}

impl Proc {
    fn data_str(&self) -> &str {
        self.data.to_str().expect("utf-8 path")
    }

    /// `node status --json` of this process (works for seednodes too: same control socket).
    pub(crate) fn status(&self) -> Option<Value> {
        cli_json("node", &["status", "--data", self.data_str(), "--json"])
    }

    /// This process's `network` table (`node peers --json`); `None` if it does not answer.
    fn peers(&self, network: &str) -> Option<Vec<Value>> {
        let peers = cli_json(
            "node",
            &[
                "peers",
                "--data",
                self.data_str(),
                "--network",
                network,
                "--json",
            ],
        )?;
        peers.as_array().cloned()
    }

    /// The addresses of `peer` in this process's `network` table; `None` while it is not in
    /// the table.
    pub(crate) fn routed_addrs(&self, network: &str, peer: &str) -> Option<Vec<String>> {
        self.peers(network)?.iter().find_map(|p| {
            (p["peer"] == peer).then(|| {
                p["addrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned))
                    .collect()
            })
        })
    }

    /// Peer ids in this process's mainnet Kademlia table (`node peers --network mainnet`).
    pub(crate) fn mainnet_peers(&self) -> Vec<String> {
        self.peers("mainnet")
            .unwrap_or_else(|| panic!("`node peers` against {} failed", self.daemon.label))
            .iter()
            .filter_map(|p| p["peer"].as_str().map(str::to_owned))
            .collect()
    }
}

/// How to stand the network up; the default is what most tests use.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    /// Mark mainnet `strict = true` in every descriptor (testnet stays non-strict).
    pub(crate) strict_mainnet: bool,
    /// Leave testnet at `private_addresses = false` (mainnet always accepts them: its members
    /// route each other on loopback).
    pub(crate) public_testnet: bool,
    /// Also start [`Network::dual`]: a member approved in both mainnet and testnet.
    pub(crate) dual_member: bool,
}

/// Mainnet (anchor, seednode, two members) and testnet (anchor, seednode).
pub(crate) struct Network {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) main_seed: Proc,
    pub(crate) test_seed: Proc,
    /// The mainnet-only members.
    pub(crate) members: Vec<Proc>,
    /// A member of mainnet and testnet (only with [`Options::dual_member`]).
    pub(crate) dual: Option<Proc>,
    main_anchor: PublicKey,
    test_anchor: PublicKey,
    started: Instant,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn anchor_new(dir: &Path, network: &str) -> PublicKey {
    let out = dir.join(format!("{network}-anchor"));
    let run = run_with_timeout(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            network,
            "--out",
            p(&out),
            "--insecure-plaintext",
            "--json",
        ],
        Duration::from_secs(20),
    )
    .success();
    run.json()["public_key"]
        .as_str()
        .expect("public_key")
        .parse()
        .expect("anchor public key parses")
}

fn descriptor(
    main_anchor: &PublicKey,
    test_anchor: &PublicKey,
    boot: Option<(&str, &str)>,
    opts: &Options,
) -> String {
    let strict_mainnet = opts.strict_mainnet;
    let private_testnet = !opts.public_testnet;
    let (main_boot, test_boot) = boot.unwrap_or(("", ""));
    let list = |a: &str| {
        if a.is_empty() {
            String::new()
        } else {
            format!("bootstrap = [\"{a}\"]\n")
        }
    };
    format!(
        "[[network]]\nname = \"mainnet\"\nanchors = [\"{main_anchor}\"]\n{}join = \"approval\"\n\
         strict = {strict_mainnet}\nprivate_addresses = true\n\n\
         [[network]]\nname = \"testnet\"\nanchors = [\"{test_anchor}\"]\n{}join = \"approval\"\n\
         private_addresses = {private_testnet}\n",
        list(main_boot),
        list(test_boot)
    )
}

impl Network {
    /// Stands the default network up (mainnet non-strict, no dual member).
    pub(crate) fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Stands the network up; every step waits under [`WAIT`].
    pub(crate) fn start_with(opts: Options) -> Self {
        let started = Instant::now();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let main_anchor = anchor_new(&root, "mainnet");
        let test_anchor = anchor_new(&root, "testnet");

        // Seednodes get a descriptor without bootstrap entries (their own ports are not known
        // yet); nodes get one that points at them.
        let seed_desc = root.join("seeds.toml");
        std::fs::write(
            &seed_desc,
            descriptor(&main_anchor, &test_anchor, None, &opts),
        )
        .expect("write");
        let main_seed = Self::seednode(&root, "mainnet", &seed_desc);
        let test_seed = Self::seednode(&root, "testnet", &seed_desc);
        let networks = root.join("networks.toml");
        std::fs::write(
            &networks,
            descriptor(
                &main_anchor,
                &test_anchor,
                Some((&main_seed.addr, &test_seed.addr)),
                &opts,
            ),
        )
        .expect("write");

        let mut net = Self {
            dir,
            main_seed,
            test_seed,
            members: Vec::new(),
            dual: None,
            main_anchor,
            test_anchor,
            started,
        };
        for i in 1..=2 {
            let proc = net.spawn_member(&format!("member{i}"), &networks, &["mainnet"]);
            net.members.push(proc);
        }
        if opts.dual_member {
            let proc = net.spawn_member("dual", &networks, &["mainnet", "testnet"]);
            net.dual = Some(proc);
        }
        // Approve every join request through the operator CLI.
        for i in 0..net.members.len() {
            net.approve("mainnet", &net.members[i].peer);
        }
        if let Some(dual) = &net.dual {
            net.approve("mainnet", &dual.peer);
            net.approve("testnet", &dual.peer);
        }
        for m in net.members.iter().chain(net.dual.as_ref()) {
            let want = if net.dual.as_ref().is_some_and(|d| d.peer == m.peer) {
                2
            } else {
                1
            };
            net.guard(|| {
                wait_for(
                    &format!("{} to be a member of its {want} network(s)", m.daemon.label),
                    WAIT,
                    || {
                        let s = m.status()?;
                        let nets = s["networks"].as_array()?;
                        (nets.len() == want && nets.iter().all(|n| n["state"] == "member"))
                            .then_some(())
                    },
                )
            });
        }
        // Each member's routing table holds the seednode, and (discovery every 5 s) the other
        // member; the dual member's holds the mainnet seednode.
        let ids: Vec<String> = net.members.iter().map(|m| m.peer.to_string()).collect();
        let seed_id = net.main_seed.peer.to_string();
        for i in 0..net.members.len() {
            let m = &net.members[i];
            let other = &ids[1 - i];
            net.guard(|| {
                wait_for(
                    &format!(
                        "{} to route the seednode and the other member",
                        m.daemon.label
                    ),
                    WAIT,
                    || {
                        let peers = m.mainnet_peers();
                        (peers.contains(&seed_id) && peers.contains(other)).then_some(())
                    },
                )
            });
        }
        if let Some(dual) = &net.dual {
            net.guard(|| {
                wait_for("dual to route the mainnet seednode", WAIT, || {
                    dual.mainnet_peers().contains(&seed_id).then_some(())
                })
            });
        }
        eprintln!(
            "[fixture] network up in {:.1?}: seed(mainnet)={} seed(testnet)={} member1={} \
             member2={} dual={:?} strict_mainnet={}",
            net.started.elapsed(),
            net.main_seed.peer,
            net.test_seed.peer,
            net.members[0].peer,
            net.members[1].peer,
            net.dual.as_ref().map(|d| d.peer),
            opts.strict_mainnet
        );
        net
    }

    /// Initialises and runs a node `label` that joins `joins`, and waits for it to listen.
    fn spawn_member(&self, label: &str, networks: &Path, joins: &[&str]) -> Proc {
        let root = self.dir.path();
        let data = root.join(label);
        let init = run_with_timeout(
            "node",
            &["init", "--data", p(&data), "--json"],
            Duration::from_secs(20),
        )
        .success()
        .json();
        let peer: PeerId = init["peer_id"]
            .as_str()
            .expect("peer_id")
            .parse()
            .expect("peer id");
        let mut args = vec!["run", "--data", p(&data), "--networks", p(networks)];
        for n in joins {
            args.extend(["--network", n]);
        }
        args.extend(["--listen", "/ip4/127.0.0.1/tcp/0", "--label", label]);
        let daemon = Daemon::spawn(label, "node", &args, root);
        let mut proc = Proc {
            daemon,
            data,
            peer,
            addr: String::new(),
        };
        proc.addr =
            self.guard(|| wait_for(&format!("{label} to listen"), WAIT, || listen_addr(&proc)));
        proc
    }

    /// Waits for `peer`'s join request for `network` and approves it through the operator CLI.
    fn approve(&self, network: &str, peer: &PeerId) {
        let seed = if network == "mainnet" {
            &self.main_seed
        } else {
            &self.test_seed
        };
        let seed_data = seed.data_str();
        let peer = peer.to_string();
        let id = self.guard(|| {
            wait_for(
                &format!("the {network} join request of {peer}"),
                WAIT,
                || {
                    let pending =
                        cli_json("seednode", &["pending", "--data", seed_data, "--json"])?;
                    pending
                        .as_array()?
                        .iter()
                        .find(|r| r["peer"] == peer.as_str() && r["network"] == network)
                        .and_then(|r| r["id"].as_i64())
                },
            )
        });
        let approved = run_with_timeout(
            "seednode",
            &["approve", &id.to_string(), "--data", seed_data, "--json"],
            Duration::from_secs(20),
        );
        if !approved.ok {
            self.fail(&format!(
                "approve {id} ({network}) failed:\n{}\n{}",
                approved.stdout, approved.stderr
            ));
        }
    }

    fn seednode(root: &Path, network: &str, desc: &Path) -> Proc {
        let label = format!("seed-{network}");
        let data = root.join(&label);
        let init = run_with_timeout(
            "seednode",
            &["init", "--data", p(&data), "--json"],
            Duration::from_secs(20),
        )
        .success()
        .json();
        let public = init["public_key"].as_str().expect("public_key").to_owned();
        let peer: PeerId = init["peer_id"]
            .as_str()
            .expect("peer_id")
            .parse()
            .expect("peer id");
        let delegation = root.join(format!("{network}.delegation"));
        let anchor_key = root.join(format!("{network}-anchor")).join("anchor.key");
        run_with_timeout(
            "seednode",
            &[
                "anchor",
                "delegate",
                "--anchor-key",
                p(&anchor_key),
                "--seednode",
                &public,
                "--network",
                network,
                "--roles",
                "member,operator",
                "--out",
                p(&delegation),
            ],
            Duration::from_secs(20),
        )
        .success();
        let daemon = Daemon::spawn(
            &label,
            "seednode",
            &[
                "run",
                "--data",
                p(&data),
                "--networks",
                p(desc),
                "--delegation",
                p(&delegation),
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
            ],
            root,
        );
        let mut proc = Proc {
            daemon,
            data,
            peer,
            addr: String::new(),
        };
        let addr = wait_for(&format!("{label} to listen"), WAIT, || listen_addr(&proc));
        proc.addr = addr;
        proc
    }

    /// Every process, for log dumps and routing-table checks.
    pub(crate) fn procs(&self) -> Vec<&Proc> {
        let mut all = vec![&self.main_seed, &self.test_seed];
        all.extend(self.members.iter());
        all.extend(self.dual.as_ref());
        all
    }

    /// Runs `f`; on panic prints every daemon's log tail and re-panics.
    pub(crate) fn guard<T>(&self, f: impl FnOnce() -> T) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(e) => {
                self.dump_logs();
                std::panic::resume_unwind(e)
            }
        }
    }

    /// Prints every daemon's log tail, then panics with `msg`.
    pub(crate) fn fail(&self, msg: &str) -> ! {
        self.dump_logs();
        panic!("{msg}");
    }

    pub(crate) fn dump_logs(&self) {
        let mut out = String::from("\n========== daemon logs ==========\n");
        for proc in [&self.main_seed, &self.test_seed] {
            out.push_str(&tail_of(proc));
        }
        for m in self.members.iter().chain(self.dual.as_ref()) {
            out.push_str(&tail_of(m));
        }
        eprintln!("{out}");
    }

    /// A verifier trusting both anchors (the node's own access list).
    fn verifier(&self) -> Verifier {
        let access = AccessList::new([
            NetworkTrust {
                name: "mainnet".into(),
                anchors: vec![self.main_anchor],
                strict: false,
            },
            NetworkTrust {
                name: "testnet".into(),
                anchors: vec![self.test_anchor],
                strict: false,
            },
        ])
        .expect("access list");
        Verifier::new(VerifierConfig::default(), access)
    }

    /// An issuer for `network` built from the real delegation file and seednode identity key.
    fn issuer(&self, network: &str) -> Issuer {
        let root = self.dir.path();
        let delegation =
            std::fs::read(root.join(format!("{network}.delegation"))).expect("read delegation");
        let key = SecretKey::load(&root.join(format!("seed-{network}")).join("identity.key"))
            .expect("load seednode key");
        Issuer::new(&delegation, &self.verifier(), key, SystemTime::now())
            .unwrap_or_else(|e| panic!("issuer for {network}: {e}"))
    }

    /// Mints a membership of `network` for `subject`, issued at `issued_at` for `lifetime`.
    pub(crate) fn mint(
        &self,
        network: &str,
        subject: &PeerId,
        issued_at: SystemTime,
        lifetime: Duration,
    ) -> Vec<u8> {
        self.mint_with_role(network, subject, "member", issued_at, lifetime)
    }

    /// Like [`Network::mint`], granting `role` (the delegation allows `member` and `operator`).
    pub(crate) fn mint_with_role(
        &self,
        network: &str,
        subject: &PeerId,
        role: &str,
        issued_at: SystemTime,
        lifetime: Duration,
    ) -> Vec<u8> {
        self.issuer(network)
            .issue(subject, &[role.to_owned()], lifetime, issued_at)
            .unwrap_or_else(|e| panic!("minting a {network} token: {e}"))
            .bytes
    }
}

fn tail_of(proc: &Proc) -> String {
    let log = proc.daemon.log();
    let all: Vec<&str> = log.lines().collect();
    let start = all.len().saturating_sub(40);
    let out = std::fs::read_to_string(&proc.daemon.stdout).unwrap_or_default();
    format!(
        "----- {} ({}) stdout:\n{}----- {} stderr (last 40 lines):\n{}\n",
        proc.daemon.label,
        proc.peer,
        out,
        proc.daemon.label,
        all[start..].join("\n")
    )
}

fn listen_addr(proc: &Proc) -> Option<String> {
    let s = proc.status()?;
    s["listen"].as_array()?.first()?.as_str().map(str::to_owned)
}
