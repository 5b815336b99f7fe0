//! `seednode anchor new`, `seednode init` and `seednode anchor delegate`, driven as a user would:
//! anchor keys sealed with a passphrase from a file, the environment or nowhere (an error), and
//! the plaintext opt-out.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cordon_membership::{
    AccessList, AnchorKeyFile, NetworkTrust, Passphrase, PeerId, PublicKey, Verifier,
    VerifierConfig,
};
use cordon_tests::{ANCHOR_PASSPHRASE_ENV, Run, WEAK_ANCHOR_KDF_ENV, run, run_env};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Writes an owner-only passphrase file, as an operator would (`umask 077; echo ... > FILE`).
fn passphrase_file(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap()
        .write_all(format!("{passphrase}\n").as_bytes())
        .unwrap();
    path
}

#[test]
fn anchor_new_writes_a_0600_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("anchor");
    let out_s = out.to_str().unwrap();
    let pass = passphrase_file(dir.path(), "pw", "the anchor passphrase");
    let created = run(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            "mainnet",
            "--out",
            out_s,
            "--passphrase-file",
            pass.to_str().unwrap(),
            "--json",
        ],
    )
    .success()
    .json();
    // Without the test knob the strong default parameters are used and stated in the file.
    assert_eq!(created["encrypted"], true, "{created}");
    assert!(
        std::fs::read_to_string(out.join("anchor.key"))
            .unwrap()
            .starts_with("cordon-anchor-key/1 encrypted argon2id v=19 m=65536 t=3 p=1\n")
    );
    assert_eq!(mode(&out.join("anchor.key")), 0o600);
    assert_eq!(mode(&out), 0o700);
    let public: PublicKey = created["public_key"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        created["key_id"].as_u64().unwrap(),
        u64::from(public.key_id())
    );
    let pub_file = std::fs::read_to_string(out.join("anchor.pub")).unwrap();
    assert_eq!(pub_file.trim(), public.to_string());
    let key_text = std::fs::read_to_string(out.join("anchor.key")).unwrap();
    assert!(
        !created.to_string().contains(key_text.trim()),
        "secret key printed"
    );

    let again = run(
        "seednode",
        &["anchor", "new", "--network", "mainnet", "--out", out_s],
    )
    .failure();
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(out.join("anchor.key")).unwrap(),
        key_text
    );
}

#[test]
fn delegation_file_is_a_standard_biscuit_that_verifies_for_the_seednode() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_dir = dir.path().join("anchor");
    let data = dir.path().join("seed");
    let token = dir.path().join("mainnet.delegation");
    let anchor = run_env(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            "mainnet",
            "--out",
            anchor_dir.to_str().unwrap(),
            "--json",
        ],
        &[(ANCHOR_PASSPHRASE_ENV, "pw"), (WEAK_ANCHOR_KDF_ENV, "1")],
    )
    .success()
    .json();
    let seed = run(
        "seednode",
        &["init", "--data", data.to_str().unwrap(), "--json"],
    )
    .success()
    .json();
    assert_eq!(mode(&data.join("identity.key")), 0o600);
    let written = run_env(
        "seednode",
        &[
            "anchor",
            "delegate",
            "--anchor-key",
            anchor_dir.join("anchor.key").to_str().unwrap(),
            "--seednode",
            seed["public_key"].as_str().unwrap(),
            "--network",
            "mainnet",
            "--roles",
            "member,operator",
            "--ttl",
            "30d",
            "--max-lifetime",
            "7d",
            "--out",
            token.to_str().unwrap(),
            "--json",
        ],
        &[(ANCHOR_PASSPHRASE_ENV, "pw")],
    )
    .success()
    .json();

    let anchor_key: PublicKey = anchor["public_key"].as_str().unwrap().parse().unwrap();
    let bytes = std::fs::read(&token).unwrap();
    // The upstream biscuit library parses the file given only the anchor's public key.
    let parsed = biscuit_auth::Biscuit::from(&bytes, anchor_key.to_biscuit()).unwrap();
    assert_eq!(parsed.root_key_id(), Some(anchor_key.key_id()));
    // The delegation's revocation id derives from the anchor's block-0 signature.
    assert_eq!(
        cordon_membership::RevocationId::delegation(&parsed.revocation_identifiers()[0])
            .to_string(),
        written["revocation_id"].as_str().unwrap()
    );
    let b64 = std::fs::read_to_string(dir.path().join("mainnet.delegation.b64")).unwrap();
    biscuit_auth::Biscuit::from_base64(b64.trim(), anchor_key.to_biscuit()).unwrap();

    let verifier = Verifier::new(
        VerifierConfig::default(),
        AccessList::new([NetworkTrust {
            name: "mainnet".into(),
            anchors: vec![anchor_key],
            strict: false,
        }])
        .unwrap(),
    );
    let seednode: PeerId = seed["peer_id"].as_str().unwrap().parse().unwrap();
    let verdict = verifier
        .verify_delegation(&bytes, &seednode, SystemTime::now())
        .unwrap();
    assert_eq!(verdict.facts.network, "mainnet");
    assert_eq!(verdict.facts.allowed_roles, ["member", "operator"]);
    assert_eq!(verdict.facts.max_lifetime.as_secs(), 7 * 86_400);
}

#[test]
fn delegate_errors_name_the_problem_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let anchor_dir = dir.path().join("anchor");
    // A plaintext key (the opt-out, and every key written before encryption) still works.
    let created = run(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            "mainnet",
            "--out",
            anchor_dir.to_str().unwrap(),
            "--insecure-plaintext",
        ],
    )
    .success();
    assert!(
        created.stderr.contains("--insecure-plaintext") && created.stderr.contains("NOT encrypted"),
        "{}",
        created.stderr
    );
    assert!(created.stdout.contains("UNENCRYPTED"), "{}", created.stdout);
    assert!(
        std::fs::read_to_string(anchor_dir.join("anchor.key"))
            .unwrap()
            .starts_with("ed25519-private/")
    );
    let key = anchor_dir.join("anchor.key");
    let seednode = cordon_membership::SecretKey::from_seed([9; 32])
        .public()
        .to_string();
    let out = dir.path().join("d");
    let args = |key: &str| {
        vec![
            "anchor".to_string(),
            "delegate".into(),
            "--anchor-key".into(),
            key.into(),
            "--seednode".into(),
            seednode.clone(),
            "--network".into(),
            "mainnet".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let missing = dir.path().join("missing.key");
    let a = args(missing.to_str().unwrap());
    let r = run(
        "seednode",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .failure();
    assert!(
        r.stderr.contains("missing.key") && r.stderr.contains("does not exist"),
        "{}",
        r.stderr
    );

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = args(key.to_str().unwrap());
    let r = run(
        "seednode",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .failure();
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    assert!(!out.exists(), "no token written on failure");

    let r = run(
        "seednode",
        &[
            "anchor",
            "delegate",
            "--anchor-key",
            key.to_str().unwrap(),
            "--seednode",
            "ed25519/00",
            "--network",
            "mainnet",
            "--out",
            "x",
        ],
    )
    .failure();
    assert!(r.stderr.contains("--seednode"), "{}", r.stderr);
}

/// `seednode anchor new` in `dir/anchor` with the given environment and extra arguments.
fn anchor_new(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let out = dir.join("anchor");
    let mut args = vec![
        "anchor",
        "new",
        "--network",
        "mainnet",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    run_env("seednode", &args, env)
}

/// `seednode anchor delegate` of `dir/anchor/anchor.key` to a fixed seednode key, into `out`.
fn delegate(dir: &Path, out: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let key = dir.join("anchor").join("anchor.key");
    let seednode = cordon_membership::SecretKey::from_seed([9; 32])
        .public()
        .to_string();
    let out = dir.join(out);
    let mut args = vec![
        "anchor",
        "delegate",
        "--anchor-key",
        key.to_str().unwrap(),
        "--seednode",
        &seednode,
        "--network",
        "mainnet",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_env("seednode", &args, env)
}

const WEAK_KDF: (&str, &str) = (WEAK_ANCHOR_KDF_ENV, "1");

#[test]
fn passphrase_file_seals_the_key_and_delegate_needs_the_right_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let right = passphrase_file(dir.path(), "right", "correct horse battery");
    let wrong = passphrase_file(dir.path(), "wrong", "Tr0ub4dor-wrong-guess");
    let created = anchor_new(
        dir.path(),
        &["--passphrase-file", right.to_str().unwrap()],
        &[WEAK_KDF],
    )
    .success();
    assert_eq!(created.json()["encrypted"], true);
    let key_path = dir.path().join("anchor").join("anchor.key");
    assert_eq!(mode(&key_path), 0o600);
    let text = std::fs::read_to_string(&key_path).unwrap();
    assert!(
        text.starts_with("cordon-anchor-key/1 encrypted argon2id v=19 m=1024 t=1 p=1\nsalt "),
        "{text}"
    );

    // The file opens with the passphrase, to the key anchor.pub names; its seed (the plaintext
    // form of the same key) appears nowhere in the file.
    let AnchorKeyFile::Encrypted(sealed) = AnchorKeyFile::read(&key_path).unwrap() else {
        panic!("anchor new wrote a plaintext key: {text}");
    };
    let key = sealed
        .open(&Passphrase::new(b"correct horse battery".to_vec()))
        .unwrap();
    let public = std::fs::read_to_string(dir.path().join("anchor").join("anchor.pub")).unwrap();
    assert_eq!(key.public().to_string(), public.trim());
    let plain = dir.path().join("plain.key");
    key.save_new(&plain).unwrap();
    let plain = std::fs::read_to_string(&plain).unwrap();
    let seed_hex = plain.trim().strip_prefix("ed25519-private/").unwrap();
    assert_eq!(seed_hex.len(), 64);
    assert!(!text.contains(seed_hex), "seed in the clear: {text}");
    assert!(!created.stdout.contains(seed_hex) && !created.stderr.contains(seed_hex));

    // The right passphrase signs a delegation.
    delegate(
        dir.path(),
        "good.delegation",
        &["--passphrase-file", right.to_str().unwrap()],
        &[],
    )
    .success();
    assert!(dir.path().join("good.delegation").is_file());

    // A wrong one is refused, non-zero, with a clear message that does not echo it.
    let refused = delegate(
        dir.path(),
        "bad.delegation",
        &["--passphrase-file", wrong.to_str().unwrap()],
        &[],
    )
    .failure();
    assert!(
        refused.stderr.contains(&format!(
            "wrong passphrase for anchor key {} (or the file is corrupt)",
            key_path.display()
        )),
        "{}",
        refused.stderr
    );
    for shown in [&refused.stdout, &refused.stderr] {
        assert!(!shown.contains("Tr0ub4dor"), "passphrase echoed: {shown}");
        assert!(
            !shown.contains("correct horse"),
            "passphrase echoed: {shown}"
        );
        assert!(!shown.contains("panicked"), "{shown}");
    }
    assert!(!dir.path().join("bad.delegation").exists());

    // revoke-delegation opens the same key the same way.
    let revoke = |pass: &Path, out: &str| {
        run(
            "seednode",
            &[
                "anchor",
                "revoke-delegation",
                "--anchor-key",
                key_path.to_str().unwrap(),
                "--passphrase-file",
                pass.to_str().unwrap(),
                "--delegation",
                dir.path().join("good.delegation").to_str().unwrap(),
                "--out",
                dir.path().join(out).to_str().unwrap(),
            ],
        )
    };
    let refused = revoke(&wrong, "bad.update").failure();
    assert!(
        refused.stderr.contains("wrong passphrase"),
        "{}",
        refused.stderr
    );
    revoke(&right, "good.update").success();
    assert_eq!(mode(&dir.path().join("good.update")), 0o600);
}

#[test]
fn passphrase_from_the_environment_works() {
    let dir = tempfile::tempdir().unwrap();
    let env = [(ANCHOR_PASSPHRASE_ENV, "from the environment")];
    let created = anchor_new(dir.path(), &[], &[env[0], WEAK_KDF]).success();
    assert_eq!(created.json()["encrypted"], true);
    delegate(dir.path(), "d", &[], &env).success();
    let refused = delegate(
        dir.path(),
        "e",
        &[],
        &[(ANCHOR_PASSPHRASE_ENV, "from-the-wrong-environment")],
    )
    .failure();
    assert!(
        refused.stderr.contains("wrong passphrase")
            && !refused.stderr.contains("wrong-environment"),
        "{}",
        refused.stderr
    );
}

#[test]
fn without_a_terminal_or_a_source_the_error_names_the_three_sources() {
    let dir = tempfile::tempdir().unwrap();
    let failed = anchor_new(dir.path(), &[], &[WEAK_KDF]).failure();
    for source in ["--passphrase-file", "CORDON_ANCHOR_PASSPHRASE", "terminal"] {
        assert!(
            failed.stderr.contains(source),
            "{source}: {}",
            failed.stderr
        );
    }
    assert!(
        failed.stderr.contains("--insecure-plaintext"),
        "{}",
        failed.stderr
    );
    assert!(
        !dir.path().join("anchor").exists(),
        "nothing is written without a passphrase"
    );

    anchor_new(dir.path(), &[], &[(ANCHOR_PASSPHRASE_ENV, "pw"), WEAK_KDF]).success();
    let failed = delegate(dir.path(), "d", &[], &[]).failure();
    for source in ["--passphrase-file", "CORDON_ANCHOR_PASSPHRASE", "terminal"] {
        assert!(
            failed.stderr.contains(source),
            "{source}: {}",
            failed.stderr
        );
    }
    assert!(failed.stderr.contains("is encrypted"), "{}", failed.stderr);
}

#[test]
fn group_readable_passphrase_file_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pass = passphrase_file(dir.path(), "pw", "shared-secret-value");
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
    let failed = anchor_new(
        dir.path(),
        &["--passphrase-file", pass.to_str().unwrap()],
        &[WEAK_KDF],
    )
    .failure();
    assert!(
        failed
            .stderr
            .contains(&format!("chmod 600 {}", pass.display())),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("shared-secret-value"));
    assert!(!dir.path().join("anchor").exists());
}
