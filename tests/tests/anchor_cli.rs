//! `seednode anchor new`, `seednode init` and `seednode anchor delegate`, driven as a user would.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use cordon_membership::{AccessList, NetworkTrust, PeerId, PublicKey, Verifier, VerifierConfig};
use cordon_tests::run;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn anchor_new_writes_a_0600_key_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("anchor");
    let out_s = out.to_str().unwrap();
    let created = run(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            "mainnet",
            "--out",
            out_s,
            "--json",
        ],
    )
    .success()
    .json();
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
    let anchor = run(
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
    let written = run(
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
    run(
        "seednode",
        &[
            "anchor",
            "new",
            "--network",
            "mainnet",
            "--out",
            anchor_dir.to_str().unwrap(),
        ],
    )
    .success();
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
