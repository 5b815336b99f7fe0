//! Heads, updates and the receiver's state, in virtual time: every test passes `now` itself.

use std::collections::BTreeSet;

use libp2p_identity::Keypair;
use proptest::prelude::*;

use super::*;
use crate::keys::SecretKey;

const T0: u64 = 1_800_000_000;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
const MAX: usize = 100_000;

fn net(name: &str) -> NetworkName {
    name.parse().unwrap()
}

fn signer(n: u8) -> (PublicKey, Keypair) {
    let secret = SecretKey::from_seed([n; 32]);
    (secret.public(), secret.libp2p_keypair())
}

/// A 16-byte id spread over the buckets like a real hash.
fn id(n: u32) -> RevocationId {
    RevocationId(Sha256::digest(n.to_be_bytes())[..ENTRY_ID_LEN].to_vec())
}

fn entry(n: u32, expires_at: u64) -> Entry {
    Entry {
        id: id(n),
        expires_at,
    }
}

fn entries(range: std::ops::Range<u32>, expires_at: u64) -> Vec<Entry> {
    range.map(|n| entry(n, expires_at)).collect()
}

/// A log for signer `n` on `acme` holding `initial`, published once at T0.
fn published_log(n: u8, initial: Vec<Entry>) -> (SignerLog, Keypair) {
    let (public, key) = signer(n);
    let mut log = SignerLog::new(net("acme"), public);
    log.add(initial, T0);
    log.publish(&key, T0, HOUR, 0).unwrap();
    (log, key)
}

fn head(n: u8, version: u64) -> Head {
    Head {
        network: net("acme"),
        signer: signer(n).0,
        version,
        prev: [0; 32],
        root: root_of(&[]),
        count: 0,
        issued_at: T0,
        next_update: T0 + HOUR,
    }
}

/// Signs any head, valid or not, the way `SignedHead::sign` does, and returns the wire bytes.
fn forge_bytes(head: &Head, key: &Keypair) -> Vec<u8> {
    let head_bytes = to_cbor(head);
    let signature = key.sign(&signing_message(&head_bytes)).unwrap();
    to_cbor(&WireSignedHead {
        head: head_bytes,
        signature,
    })
}

fn union(r: &NetworkRevocations) -> BTreeSet<RevocationId> {
    r.ids().cloned().collect()
}

fn log_ids(log: &SignerLog) -> BTreeSet<RevocationId> {
    log.update_since(0)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[test]
fn signed_head_round_trips_through_bytes() {
    let (_, key) = signer(1);
    let signed = SignedHead::sign(head(1, 1), &key).unwrap();
    let bytes = signed.to_bytes();
    assert!(bytes.len() <= MAX_HEAD_BYTES, "{} bytes", bytes.len());
    let parsed = SignedHead::from_bytes(&bytes).unwrap();
    assert_eq!(parsed, signed);
    assert_eq!(parsed.head(), &head(1, 1));
    assert_eq!(parsed.hash(), signed.hash());
    assert_eq!(parsed.hash(), <[u8; 32]>::from(Sha256::digest(&bytes)));
}

#[test]
fn flipped_signature_byte_is_refused() {
    let (public, key) = signer(1);
    let signed = SignedHead::sign(head(1, 1), &key).unwrap();
    let mut wire: WireSignedHead = parse(&signed.to_bytes(), MAX_HEAD_BYTES, "test").unwrap();
    wire.signature[10] ^= 1;
    let err = SignedHead::from_bytes(&to_cbor(&wire)).unwrap_err();
    assert_eq!(err, HeadError::BadSignature { signer: public });
}

#[test]
fn changed_head_field_is_refused() {
    let (public, key) = signer(1);
    let signed = SignedHead::sign(head(1, 1), &key).unwrap();
    let original: WireSignedHead = parse(&signed.to_bytes(), MAX_HEAD_BYTES, "test").unwrap();
    let mut changes: Vec<Head> = Vec::new();
    let mut h = head(1, 1);
    h.version = 2;
    changes.push(h);
    let mut h = head(1, 1);
    h.root[0] ^= 1;
    changes.push(h);
    let mut h = head(1, 1);
    h.count = 1;
    changes.push(h);
    let mut h = head(1, 1);
    h.next_update += 1;
    changes.push(h);
    let mut h = head(1, 1);
    h.network = net("other");
    changes.push(h);
    for changed in changes {
        let wire = WireSignedHead {
            head: to_cbor(&changed),
            signature: original.signature.clone(),
        };
        let err = SignedHead::from_bytes(&to_cbor(&wire)).unwrap_err();
        assert_eq!(
            err,
            HeadError::BadSignature { signer: public },
            "{changed:?}"
        );
    }
}

#[test]
fn head_signed_by_a_key_other_than_its_signer_is_refused() {
    let (_, key1) = signer(1);
    // Signing head(1) with key 2 through the API is refused outright...
    let (_, key2) = signer(2);
    let err = SignedHead::sign(head(1, 1), &key2).unwrap_err();
    assert_eq!(
        err,
        HeadError::KeyMismatch {
            signer: signer(1).0
        }
    );
    // ...and a head naming signer 2 but signed by key 1 does not verify.
    let forged = forge_bytes(&head(2, 1), &key1);
    assert!(matches!(
        SignedHead::from_bytes(&forged),
        Err(HeadError::BadSignature { .. })
    ));
}

#[test]
fn version_zero_and_next_update_not_after_issue_are_refused() {
    let (_, key) = signer(1);
    let zero = head(1, 0);
    assert_eq!(
        SignedHead::sign(zero.clone(), &key).unwrap_err(),
        HeadError::InvalidVersion
    );
    assert_eq!(
        SignedHead::from_bytes(&forge_bytes(&zero, &key)).unwrap_err(),
        HeadError::InvalidVersion
    );
    let mut late = head(1, 1);
    late.next_update = late.issued_at;
    let expected = HeadError::InvalidSchedule {
        issued_at: T0,
        next_update: T0,
    };
    assert_eq!(SignedHead::sign(late.clone(), &key).unwrap_err(), expected);
    assert_eq!(
        SignedHead::from_bytes(&forge_bytes(&late, &key)).unwrap_err(),
        expected
    );
}

#[test]
fn oversized_trailing_and_non_canonical_heads_are_refused() {
    let (_, key) = signer(1);
    let bytes = SignedHead::sign(head(1, 1), &key).unwrap().to_bytes();

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        SignedHead::from_bytes(&trailing),
        Err(HeadError::Malformed { .. })
    ));

    let mut huge = bytes.clone();
    huge.resize(MAX_HEAD_BYTES + 1, 0);
    assert_eq!(
        SignedHead::from_bytes(&huge).unwrap_err(),
        HeadError::TooLarge {
            what: "revocation head",
            max: MAX_HEAD_BYTES
        }
    );

    // The same head with `version` as a needlessly long CBOR integer (0x1b: 8-byte uint).
    let head_bytes = to_cbor(&head(1, 1));
    let at = head_bytes
        .windows(8)
        .position(|w| w == b"version\x01")
        .unwrap();
    let mut long = head_bytes[..at + 7].to_vec();
    long.push(0x1b);
    long.extend_from_slice(&1u64.to_be_bytes());
    long.extend_from_slice(&head_bytes[at + 8..]);
    let parsed: Head = parse(&long, MAX_HEAD_BYTES, "test").unwrap();
    assert_eq!(parsed, head(1, 1), "the long form decodes to the same head");
    let signature = key.sign(&signing_message(&long)).unwrap();
    let wire = to_cbor(&WireSignedHead {
        head: long,
        signature,
    });
    assert_eq!(
        SignedHead::from_bytes(&wire).unwrap_err(),
        HeadError::NonCanonical {
            what: "revocation head"
        }
    );
}

#[test]
fn unknown_head_field_is_refused() {
    #[derive(Serialize)]
    struct Extended {
        #[serde(flatten)]
        head: Head,
        admin: bool,
    }
    let (_, key) = signer(1);
    let head_bytes = to_cbor(&Extended {
        head: head(1, 1),
        admin: true,
    });
    let signature = key.sign(&signing_message(&head_bytes)).unwrap();
    let wire = to_cbor(&WireSignedHead {
        head: head_bytes,
        signature,
    });
    assert!(matches!(
        SignedHead::from_bytes(&wire),
        Err(HeadError::Malformed { .. })
    ));
}

#[test]
fn errors_do_not_echo_peer_bytes() {
    let garbage = b"\xa2dheadx\x1bEVIL-\x1b[31m-PAYLOAD-abcdef";
    let err = SignedHead::from_bytes(garbage).unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("EVIL") && !text.contains('\u{1b}'), "{text}");
}

#[test]
fn root_is_order_independent_and_changes_when_any_entry_changes() {
    let set = entries(0..50, T0 + DAY);
    let mut reversed = set.clone();
    reversed.reverse();
    let root = root_of(&set);
    assert_eq!(root, root_of(&reversed));
    assert_ne!(root, root_of(&set[..49]), "an entry removed");
    for i in [0, 17, 49] {
        let mut changed = set.clone();
        changed[i].expires_at += 1;
        assert_ne!(root, root_of(&changed), "expiry of entry {i} changed");
        let mut changed = set.clone();
        changed[i].id.0[15] ^= 1;
        assert_ne!(root, root_of(&changed), "id of entry {i} changed");
    }
    let mut more = set.clone();
    more.push(entry(1000, T0 + DAY));
    assert_ne!(root, root_of(&more), "an entry added");
    assert_ne!(root_of(&[]), root_of(&set[..1]));
}

#[test]
fn cached_bucket_hashes_give_the_root_of_the_whole_set() {
    let mut set = EntrySet::new();
    assert_eq!(set.root, root_of(&[]));
    let all = entries(0..300, T0 + DAY);
    let slot = |e: &Entry| {
        let slot = Slot {
            expires_at: e.expires_at,
            tag: 1,
        };
        (id_of(&e.id).unwrap(), slot)
    };
    let plan = set.plan_delta(&[], all[..200].iter().map(slot));
    set.commit(plan);
    assert_eq!(set.root, root_of(&all[..200]));
    let removed: Vec<Id> = all[..50].iter().map(|e| id_of(&e.id).unwrap()).collect();
    let plan = set.plan_delta(&removed, all[200..].iter().map(slot));
    assert_eq!(plan.len, 250);
    set.commit(plan);
    assert_eq!(set.root, root_of(&all[50..]));
    assert_eq!(set.len, 250);
    assert_eq!(set.by_expiry.len(), 250);
    assert_eq!(set.by_tag.len(), 250);
}

#[test]
fn publish_drops_expired_entries_and_root_matches() {
    let (public, key) = signer(1);
    let mut log = SignerLog::new(net("acme"), public);
    assert_eq!(log.add(entries(0..10, T0 + 100), T0), 10);
    assert_eq!(log.add(entries(10..15, T0 + DAY), T0), 5);
    // Already expired at `now`: ignored.
    assert_eq!(log.add(entries(20..25, T0), T0), 0);
    // Already present: not new.
    assert_eq!(log.add(entries(0..3, T0 + 100), T0), 0);
    assert_eq!(log.len(), 15);

    let first = log.publish(&key, T0, HOUR, 0).unwrap();
    assert_eq!(first.head().count, 15);
    let live: Vec<Entry> = log.entries().map(|(e, _)| e).collect();
    assert_eq!(first.head().root, root_of(&live));

    // At T0 + 100 the first ten have expired.
    let second = log.publish(&key, T0 + 100, HOUR, 0).unwrap();
    assert_eq!(second.head().count, 5);
    assert_eq!(second.head().root, root_of(&entries(10..15, T0 + DAY)));
    assert_eq!(log.len(), 5);
    assert_eq!(log_ids(&log).len(), 5);
}

#[test]
fn versions_strictly_increase_and_prev_chains_hashes() {
    let (public, key) = signer(1);
    let mut log = SignerLog::new(net("acme"), public);
    assert_eq!(log.version(), 0);
    assert!(log.head().is_none() && log.update_since(0).is_none());
    let first = log.publish(&key, T0, HOUR, 0).unwrap();
    assert_eq!(first.head().version, 1);
    assert_eq!(first.head().prev, [0; 32]);
    assert_eq!(first.head().next_update, T0 + HOUR);

    // A clock that went back does not make issued_at go back.
    let second = log.publish(&key, T0 - 50, HOUR, 0).unwrap();
    assert_eq!(second.head().version, 2);
    assert_eq!(second.head().prev, first.hash());
    assert_eq!(second.head().issued_at, T0);

    // min_version jumps ahead (another seednode of the same database published further).
    let third = log.publish(&key, T0 + 10, HOUR, 7).unwrap();
    assert_eq!(third.head().version, 7);
    assert_eq!(third.head().prev, second.hash());
    let fourth = log.publish(&key, T0 + 11, HOUR, 3).unwrap();
    assert_eq!(fourth.head().version, 8);
    assert_eq!(log.version(), 8);
    assert_eq!(log.head(), Some(&fourth));
}

#[test]
fn publish_refuses_zero_refresh_and_a_foreign_key_and_changes_nothing() {
    let (log, key) = published_log(1, entries(0..5, T0 + DAY));
    let mut log2 = log.clone();
    log2.add(entries(5..6, T0 + DAY), T0);
    assert_eq!(
        log2.publish(&key, T0 + 5, 0, 0).unwrap_err(),
        HeadError::InvalidSchedule {
            issued_at: T0 + 5,
            next_update: T0 + 5
        }
    );
    let (_, other) = signer(9);
    assert!(matches!(
        log2.publish(&other, T0 + 5, HOUR, 0),
        Err(HeadError::KeyMismatch { .. })
    ));
    assert_eq!(log2.version(), 1);
    assert_eq!(log2.head(), log.head());
    assert_eq!(log2.len(), 6);
    assert_eq!(log_ids(&log2), log_ids(&log));
}

#[test]
fn delta_from_an_old_version_gives_the_same_root_as_a_snapshot() {
    let (mut log, key) = published_log(1, entries(0..100, T0 + DAY));
    let mut by_delta = NetworkRevocations::new(net("acme"));
    let first = by_delta.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    assert!(first.snapshot);
    assert_eq!(first.added.len(), 100);

    for round in 1..4u32 {
        log.add(entries(100 * round..100 * round + 10, T0 + DAY), T0);
        log.publish(&key, T0 + u64::from(round), HOUR, 0).unwrap();
    }
    let delta = log.update_since(1).unwrap();
    assert_eq!(delta.since, 1);
    assert_eq!(delta.entries.len(), 30);
    let applied = by_delta.apply(&delta, MAX).unwrap();
    assert_eq!(applied.version, 4);
    assert!(!applied.snapshot);
    assert_eq!(applied.added.len(), 30);

    let mut by_snapshot = NetworkRevocations::new(net("acme"));
    by_snapshot
        .apply(&log.update_since(0).unwrap(), MAX)
        .unwrap();
    let public = signer(1).0;
    assert_eq!(
        by_delta.signers[&public].set.root,
        by_snapshot.signers[&public].set.root
    );
    assert_eq!(by_delta.signers[&public].set.root, log.published.root);
    assert_eq!(union(&by_delta), union(&by_snapshot));
    assert_eq!(union(&by_delta), log_ids(&log));
    assert_eq!(by_delta.summaries(), by_snapshot.summaries());
}

#[test]
fn delta_with_wrong_since_is_a_gap_and_changes_nothing() {
    let (mut log, key) = published_log(1, entries(0..10, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    // A delta to a signer we know nothing of is a gap from 0.
    log.add(entries(10..11, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let delta = log.update_since(1).unwrap();
    assert_eq!(
        r.apply(&delta, MAX).unwrap_err(),
        HeadError::Gap { have: 0, since: 1 }
    );
    assert!(r.is_empty() && r.summaries().is_empty());

    // Holding version 2, a delta from 1 to 3 does not fit.
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    log.add(entries(11..12, T0 + DAY), T0);
    log.publish(&key, T0 + 2, HOUR, 0).unwrap();
    let before = r.to_bytes();
    assert_eq!(
        r.apply(&log.update_since(1).unwrap(), MAX).unwrap_err(),
        HeadError::Gap { have: 2, since: 1 }
    );
    assert_eq!(r.to_bytes(), before);
    assert!(!r.contains(&id(11)));
    // The snapshot the caller then asks for applies.
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    assert!(r.contains(&id(11)));
}

#[test]
fn lower_version_is_stale_and_ignored() {
    let (mut log, key) = published_log(1, entries(0..10, T0 + DAY));
    let old = log.update_since(0).unwrap();
    log.add(entries(10..20, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    let before = r.to_bytes();
    assert_eq!(
        r.apply(&old, MAX).unwrap_err(),
        HeadError::Stale { have: 2, got: 1 }
    );
    assert_eq!(r.to_bytes(), before);
    assert_eq!(r.len(), 20);
}

#[test]
fn same_head_again_is_a_repeat_not_an_equivocation() {
    let (log, _) = published_log(1, entries(0..10, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    let before = r.to_bytes();
    // The empty delta SignerLog gives for `have == version` is a repeat too.
    for again in [log.update_since(0).unwrap(), log.update_since(1).unwrap()] {
        assert_eq!(
            r.apply(&again, MAX).unwrap_err(),
            HeadError::Repeat { version: 1 }
        );
    }
    assert_eq!(r.equivocations(), 0);
    assert_eq!(r.to_bytes(), before);
}

#[test]
fn same_version_with_another_root_is_a_counted_equivocation() {
    let (honest, _) = published_log(1, entries(0..10, T0 + DAY));
    let (forked, _) = published_log(1, entries(5..15, T0 + DAY));
    assert_eq!(honest.version(), forked.version());
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&honest.update_since(0).unwrap(), MAX).unwrap();
    let ids_before = union(&r);
    let public = signer(1).0;
    for n in 1..=2 {
        assert_eq!(
            r.apply(&forked.update_since(0).unwrap(), MAX).unwrap_err(),
            HeadError::Equivocation {
                signer: public,
                version: 1
            }
        );
        assert_eq!(r.equivocations(), n);
        assert_eq!(r.equivocations_of(&public), n);
    }
    assert_eq!(r.equivocations_of(&signer(2).0), 0);
    assert_eq!(union(&r), ids_before, "the head held first is kept");
    assert_eq!(r.head(&public), honest.head());
}

#[test]
fn floor_refuses_lower_heads() {
    let (mut log, key) = published_log(1, entries(0..3, T0 + DAY));
    let v1 = log.update_since(0).unwrap();
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let v2 = log.update_since(0).unwrap();
    log.publish(&key, T0 + 2, HOUR, 0).unwrap();
    let v3 = log.update_since(0).unwrap();

    let public = signer(1).0;
    let mut r = NetworkRevocations::new(net("acme"));
    r.raise_floor(public, 2);
    r.raise_floor(public, 1); // never lowers
    assert_eq!(
        r.apply(&v1, MAX).unwrap_err(),
        HeadError::BelowFloor {
            version: 1,
            floor: 2
        }
    );
    assert!(r.summaries().is_empty());
    r.apply(&v2, MAX).unwrap();
    r.raise_floor(public, 3);
    // The head held stays until one at the floor arrives.
    assert_eq!(r.version_of(&public), 2);
    r.apply(&v3, MAX).unwrap();
    assert_eq!(r.version_of(&public), 3);
}

#[test]
fn tampered_entries_are_a_root_mismatch_and_change_nothing() {
    let (mut log, key) = published_log(1, entries(0..20, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    log.add(entries(20..25, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let before = r.to_bytes();

    let honest = log.update_since(1).unwrap();
    let mut tampered = Vec::new();
    let mut u = honest.clone();
    u.entries[0].expires_at += 1;
    tampered.push(u);
    let mut u = honest.clone();
    u.entries.pop();
    tampered.push(u);
    let mut u = honest.clone();
    u.entries.push(entry(999, T0 + DAY));
    tampered.push(u);
    let mut u = honest.clone();
    u.entries[0].id = id(998);
    tampered.push(u);
    // A snapshot with an entry swapped: same count, other root.
    let mut u = log.update_since(0).unwrap();
    u.entries[3] = entry(997, T0 + DAY);
    tampered.push(u);
    for u in &tampered {
        assert_eq!(
            r.apply(u, MAX).unwrap_err(),
            HeadError::RootMismatch { version: 2 }
        );
        assert_eq!(r.to_bytes(), before);
        // Over the wire too: the update parses, the mismatch shows when applied.
        let parsed = Update::from_bytes(&u.to_bytes(), MAX).unwrap();
        assert!(matches!(
            r.apply(&parsed, MAX),
            Err(HeadError::RootMismatch { .. })
        ));
    }
    assert!(!r.contains(&id(999)) && !r.contains(&id(20)));
    r.apply(&honest, MAX).unwrap();
    assert!(r.contains(&id(20)));
}

#[test]
fn union_of_two_signers_and_remove_signer() {
    let (a, _) = published_log(1, entries(0..10, T0 + DAY));
    let (b, _) = published_log(2, entries(5..15, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    let first = r.apply(&a.update_since(0).unwrap(), MAX).unwrap();
    assert_eq!(first.added.len(), 10);
    let second = r.apply(&b.update_since(0).unwrap(), MAX).unwrap();
    // Only ids new to the union are reported.
    let expected: Vec<RevocationId> = {
        let mut v: Vec<_> = (10..15).map(id).collect();
        v.sort();
        v
    };
    assert_eq!(second.added, expected);
    assert_eq!(r.len(), 15);
    assert_eq!(r.ids().count(), 15);
    assert_eq!(r.summaries().len(), 2);

    let (pa, pb) = (signer(1).0, signer(2).0);
    assert!(r.remove_signer(&pb));
    assert!(!r.remove_signer(&pb));
    assert_eq!(r.len(), 10);
    assert!(r.contains(&id(5)), "still held by signer 1");
    assert!(!r.contains(&id(12)));
    assert_eq!(r.version_of(&pb), 0);
    // Trusted again, its head at the version held is accepted again (the floor is that version).
    assert_eq!(
        r.apply(&b.update_since(0).unwrap(), MAX).unwrap().version,
        1
    );
    assert!(r.remove_signer(&pa));
    assert!(r.remove_signer(&pb));
    assert!(r.is_empty() && r.summaries().is_empty());
}

#[test]
fn removed_signer_keeps_its_floor() {
    let (mut log, key) = published_log(1, entries(0..3, T0 + DAY));
    let v1 = log.update_since(0).unwrap();
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    assert!(r.remove_signer(&signer(1).0));
    assert_eq!(
        r.apply(&v1, MAX).unwrap_err(),
        HeadError::BelowFloor {
            version: 1,
            floor: 2
        }
    );
}

#[test]
fn entries_expire_when_a_later_head_is_applied() {
    let (mut log, key) = published_log(1, entries(0..5, T0 + 100));
    log.add(entries(5..8, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    assert_eq!(r.len(), 8);
    assert_eq!(r.newest_issued_at(), Some(T0 + 1));

    // The signer's next head is issued after the first five expired; the delta carries nothing
    // for them, the receiver drops them by the head's issue time.
    log.add(entries(8..9, T0 + DAY), T0 + 200);
    log.publish(&key, T0 + 200, HOUR, 0).unwrap();
    let delta = log.update_since(2).unwrap();
    assert_eq!(delta.entries, vec![entry(8, T0 + DAY)]);
    r.apply(&delta, MAX).unwrap();
    assert_eq!(r.len(), 4);
    assert!(!r.contains(&id(0)) && r.contains(&id(5)) && r.contains(&id(8)));
    assert_eq!(r.newest_issued_at(), Some(T0 + 200));

    // A snapshot carrying entries that expired by its own issue time: they are dropped.
    let (public, key2) = signer(2);
    let mut late = SignerLog::new(net("acme"), public);
    late.add(entries(20..22, T0 + 300), T0);
    late.publish(&key2, T0 + 400, HOUR, 0).unwrap();
    let mut update = late.update_since(0).unwrap();
    assert!(update.entries.is_empty());
    update.entries = entries(20..22, T0 + 300);
    r.apply(&update, MAX).unwrap();
    assert!(!r.contains(&id(20)));
}

#[test]
fn wrong_network_is_refused() {
    let (log, _) = published_log(1, entries(0..3, T0 + DAY));
    let mut r = NetworkRevocations::new(net("other"));
    assert_eq!(
        r.apply(&log.update_since(0).unwrap(), MAX).unwrap_err(),
        HeadError::WrongNetwork {
            expected: net("other"),
            got: net("acme")
        }
    );
    assert!(r.is_empty());
}

#[test]
fn set_over_the_per_signer_limit_is_refused() {
    let (mut log, key) = published_log(1, entries(0..10, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    assert_eq!(
        r.apply(&log.update_since(0).unwrap(), 9).unwrap_err(),
        HeadError::TooManyEntries { count: 10, max: 9 }
    );
    r.apply(&log.update_since(0).unwrap(), 10).unwrap();
    log.add(entries(10..11, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    let before = r.to_bytes();
    assert_eq!(
        r.apply(&log.update_since(1).unwrap(), 10).unwrap_err(),
        HeadError::TooManyEntries { count: 11, max: 10 }
    );
    assert_eq!(r.to_bytes(), before);
}

#[test]
fn update_round_trips_through_bytes() {
    let (mut log, key) = published_log(1, entries(0..50, T0 + DAY));
    log.add(entries(50..51, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    for update in [log.update_since(0).unwrap(), log.update_since(1).unwrap()] {
        let bytes = update.to_bytes();
        assert_eq!(Update::from_bytes(&bytes, 51).unwrap(), update);
    }
    // About 23 bytes per entry on the wire.
    let snapshot = log.update_since(0).unwrap().to_bytes();
    let head = log.head().unwrap().to_bytes().len();
    let per_entry = (snapshot.len() - head) as f64 / 51.0;
    assert!(per_entry < 24.0, "{per_entry} bytes per entry");
}

#[test]
fn update_with_too_many_entries_is_refused() {
    let (log, _) = published_log(1, entries(0..3, T0 + DAY));
    let bytes = log.update_since(0).unwrap().to_bytes();
    assert_eq!(
        Update::from_bytes(&bytes, 2).unwrap_err(),
        HeadError::TooManyEntries { count: 3, max: 2 }
    );
    // Far more bytes than `max_entries` could need are refused before parsing.
    let (big, _) = published_log(1, entries(0..200, T0 + DAY));
    assert!(matches!(
        Update::from_bytes(&big.update_since(0).unwrap().to_bytes(), 2),
        Err(HeadError::TooLarge { .. })
    ));
}

#[test]
fn update_with_a_15_byte_id_is_refused() {
    let (log, _) = published_log(1, entries(0..3, T0 + DAY));
    let mut update = log.update_since(0).unwrap();
    update.entries[1].id.0.pop();
    assert_eq!(
        Update::from_bytes(&update.to_bytes(), MAX).unwrap_err(),
        HeadError::EntryIdLength { len: 15 }
    );
    let mut r = NetworkRevocations::new(net("acme"));
    assert_eq!(
        r.apply(&update, MAX).unwrap_err(),
        HeadError::EntryIdLength { len: 15 }
    );
}

#[test]
fn update_with_duplicate_ids_is_refused() {
    let (log, _) = published_log(1, entries(0..3, T0 + DAY));
    let mut update = log.update_since(0).unwrap();
    let mut twin = update.entries[0].clone();
    twin.expires_at += 5;
    update.entries.push(twin);
    assert_eq!(
        Update::from_bytes(&update.to_bytes(), MAX).unwrap_err(),
        HeadError::DuplicateEntry
    );
    let mut r = NetworkRevocations::new(net("acme"));
    assert_eq!(
        r.apply(&update, MAX).unwrap_err(),
        HeadError::DuplicateEntry
    );
}

#[test]
fn update_with_since_after_its_head_or_bad_head_is_refused() {
    let (log, _) = published_log(1, entries(0..3, T0 + DAY));
    let mut update = log.update_since(0).unwrap();
    update.since = 2;
    assert_eq!(
        Update::from_bytes(&update.to_bytes(), MAX).unwrap_err(),
        HeadError::InvalidSince {
            since: 2,
            version: 1
        }
    );
    let mut wire: WireUpdate =
        parse(&log.update_since(0).unwrap().to_bytes(), usize::MAX, "test").unwrap();
    let last = wire.head.len() - 1;
    wire.head[last] ^= 1; // inside the signature
    assert!(matches!(
        Update::from_bytes(&to_cbor(&wire), MAX),
        Err(HeadError::BadSignature { .. })
    ));
}

#[test]
fn network_revocations_round_trip_through_bytes() {
    let (mut a, key) = published_log(1, entries(0..40, T0 + DAY));
    let (b, _) = published_log(2, entries(30..60, T0 + DAY));
    let (forked, _) = published_log(2, entries(0..1, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&a.update_since(0).unwrap(), MAX).unwrap();
    a.add(entries(100..105, T0 + DAY), T0);
    a.publish(&key, T0 + 1, HOUR, 0).unwrap();
    r.apply(&a.update_since(1).unwrap(), MAX).unwrap();
    r.apply(&b.update_since(0).unwrap(), MAX).unwrap();
    let _ = r.apply(&forked.update_since(0).unwrap(), MAX);
    r.raise_floor(signer(3).0, 9);

    let bytes = r.to_bytes();
    let restored = NetworkRevocations::from_bytes(&net("acme"), &bytes, MAX).unwrap();
    assert_eq!(restored.to_bytes(), bytes);
    assert_eq!(union(&restored), union(&r));
    assert_eq!(restored.len(), 65);
    assert_eq!(restored.summaries(), r.summaries());
    assert_eq!(restored.equivocations(), 1);
    assert_eq!(restored.equivocations_of(&signer(2).0), 1);
    assert_eq!(restored.version_of(&signer(1).0), 2);
    // Floors survive: signer 3's version 1 is below its floor.
    let mut restored = restored;
    let (c, _) = published_log(3, Vec::new());
    assert!(matches!(
        restored.apply(&c.update_since(0).unwrap(), MAX),
        Err(HeadError::BelowFloor { .. })
    ));
    // Arrival versions survive: the restored state still serves a delta.
    let delta = restored.update_for(&signer(1).0, 1).unwrap();
    assert_eq!(delta.since, 1);
    assert_eq!(delta.entries.len(), 5);
}

#[test]
fn tampered_persistence_is_refused() {
    let (log, _) = published_log(1, entries(0..20, T0 + DAY));
    let mut r = NetworkRevocations::new(net("acme"));
    r.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    let bytes = r.to_bytes();
    let stored = || -> StoredState { parse(&bytes, usize::MAX, "test").unwrap() };
    let load = |s: &StoredState| NetworkRevocations::from_bytes(&net("acme"), &to_cbor(s), MAX);

    let mut s = stored();
    s.signers[0].entries[4].1 += 1;
    assert_eq!(
        load(&s).unwrap_err(),
        HeadError::RootMismatch { version: 1 }
    );
    let mut s = stored();
    s.signers[0].entries.pop();
    assert_eq!(
        load(&s).unwrap_err(),
        HeadError::RootMismatch { version: 1 }
    );
    let mut s = stored();
    let last = s.signers[0].head.len() - 1;
    s.signers[0].head[last] ^= 1;
    assert!(matches!(
        load(&s).unwrap_err(),
        HeadError::BadSignature { .. }
    ));
    let mut s = stored();
    s.signers[0].entries[0].2 = 5;
    assert!(matches!(load(&s).unwrap_err(), HeadError::Corrupt { .. }));
    let mut s = stored();
    let twin = StoredSigner {
        head: s.signers[0].head.clone(),
        base: s.signers[0].base,
        entries: s.signers[0]
            .entries
            .iter()
            .map(|StoredEntry(i, e, t)| StoredEntry(i.clone(), *e, *t))
            .collect(),
    };
    s.signers.push(twin);
    assert!(matches!(load(&s).unwrap_err(), HeadError::Corrupt { .. }));
    let mut s = stored();
    s.format = 2;
    assert_eq!(
        load(&s).unwrap_err(),
        HeadError::UnsupportedFormat { format: 2 }
    );
    assert!(matches!(
        NetworkRevocations::from_bytes(&net("other"), &bytes, MAX),
        Err(HeadError::WrongNetwork { .. })
    ));
    assert_eq!(
        NetworkRevocations::from_bytes(&net("acme"), &bytes, 19).unwrap_err(),
        HeadError::TooManyEntries { count: 20, max: 19 }
    );
    assert!(matches!(
        NetworkRevocations::from_bytes(&net("acme"), &bytes[..bytes.len() - 1], MAX),
        Err(HeadError::Malformed { .. })
    ));
}

#[test]
fn relayed_updates_verify_at_a_third_node() {
    let (mut log, key) = published_log(1, entries(0..30, T0 + DAY));
    let public = signer(1).0;
    let mut relay = NetworkRevocations::new(net("acme"));
    relay.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    let mut far = NetworkRevocations::new(net("acme"));
    assert!(relay.update_for(&signer(2).0, 0).is_none());
    assert!(relay.update_for(&public, 1).is_none(), "peer is not behind");
    far.apply(&relay.update_for(&public, 0).unwrap(), MAX)
        .unwrap();

    for round in 1..=3u32 {
        log.add(entries(100 * round..100 * round + 2, T0 + DAY), T0);
        log.publish(&key, T0 + u64::from(round), HOUR, 0).unwrap();
        let have = relay.version_of(&public);
        relay.apply(&log.update_since(have).unwrap(), MAX).unwrap();
    }
    // The relay received versions 2..=4 as deltas, so it serves `far` (at 1) a delta.
    let update = relay.update_for(&public, 1).unwrap();
    assert_eq!(update.since, 1);
    assert_eq!(update.entries.len(), 6);
    far.apply(&update, MAX).unwrap();
    assert_eq!(union(&far), log_ids(&log));

    // A peer from before the relay's snapshot base gets a snapshot.
    let mut fresh = NetworkRevocations::new(net("acme"));
    fresh.apply(&log.update_since(0).unwrap(), MAX).unwrap();
    let from_fresh = fresh.update_for(&public, 2).unwrap();
    assert_eq!(from_fresh.since, 0);
    assert_eq!(from_fresh.entries.len(), log.len());
}

#[test]
fn signer_log_restores_and_continues() {
    let (mut log, key) = published_log(1, entries(0..10, T0 + DAY));
    log.add(entries(10..12, T0 + DAY), T0);
    log.publish(&key, T0 + 1, HOUR, 0).unwrap();
    log.add(entries(12..13, T0 + DAY), T0);
    let stored: Vec<(Entry, u64)> = log.entries().collect();
    assert!(stored.contains(&(entry(11, T0 + DAY), 2)));
    assert!(
        stored.contains(&(entry(12, T0 + DAY), 3)),
        "pending: next version"
    );
    assert!(stored.contains(&(entry(3, T0 + DAY), 1)));

    let public = signer(1).0;
    let restored =
        SignerLog::restore(net("acme"), public, stored.clone(), log.head().cloned()).unwrap();
    assert_eq!(restored.version(), 2);
    assert_eq!(restored.len(), 13);
    assert_eq!(restored.update_since(1), log.update_since(1));
    let (mut a, mut b) = (log, restored);
    let ha = a.publish(&key, T0 + 2, HOUR, 0).unwrap();
    let hb = b.publish(&key, T0 + 2, HOUR, 0).unwrap();
    assert_eq!(ha, hb);

    // Without a head, every entry waits for the first publish.
    let fresh = SignerLog::restore(net("acme"), public, stored.clone(), None).unwrap();
    assert_eq!((fresh.version(), fresh.len()), (0, 13));

    // A head that does not match the entries, or names another signer or network, is refused.
    let missing: Vec<(Entry, u64)> = stored[1..].to_vec();
    assert!(matches!(
        SignerLog::restore(net("acme"), public, missing, a.head().cloned()),
        Err(HeadError::RootMismatch { .. })
    ));
    assert!(matches!(
        SignerLog::restore(net("acme"), signer(2).0, stored.clone(), a.head().cloned()),
        Err(HeadError::WrongSigner { .. })
    ));
    assert!(matches!(
        SignerLog::restore(net("other"), public, stored.clone(), a.head().cloned()),
        Err(HeadError::WrongNetwork { .. })
    ));
    let mut twice = stored.clone();
    twice.push(stored[0].clone());
    assert_eq!(
        SignerLog::restore(net("acme"), public, twice, None).unwrap_err(),
        HeadError::DuplicateEntry
    );
}

#[test]
fn signer_log_ignores_ids_of_the_wrong_length() {
    let (public, _) = signer(1);
    let mut log = SignerLog::new(net("acme"), public);
    let short = Entry {
        id: RevocationId(vec![1; 15]),
        expires_at: T0 + DAY,
    };
    assert_eq!(log.add([short, entry(1, T0 + DAY)], T0), 1);
    assert_eq!(log.len(), 1);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// Revoke these (id, lifetime in seconds) at the signer.
    Add(Vec<(u8, u16)>),
    /// Publish after this many seconds.
    Publish(u16),
    /// The receiver pulls from the signer.
    Sync,
    /// The relay pulls from the receiver.
    Relay,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::vec((any::<u8>(), 1u16..2000), 0..6).prop_map(Step::Add),
        (0u16..1500).prop_map(Step::Publish),
        Just(Step::Sync),
        Just(Step::Relay),
    ]
}

fn assert_mirrors(r: &NetworkRevocations, log: &SignerLog) {
    let public = log.signer;
    if r.version_of(&public) == log.version() && log.version() > 0 {
        assert_eq!(r.signers[&public].set.root, log.published.root);
        assert_eq!(union(r), log_ids(log));
    }
}

proptest! {
    #[test]
    fn random_add_publish_pull_sequences_keep_receiver_root_equal_to_signer_root(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let (public, key) = signer(1);
        let mut log = SignerLog::new(net("acme"), public);
        let mut receiver = NetworkRevocations::new(net("acme"));
        let mut relay = NetworkRevocations::new(net("acme"));
        let mut now = T0;
        for step in steps {
            match step {
                Step::Add(list) => {
                    let list = list
                        .into_iter()
                        .map(|(n, life)| entry(u32::from(n), now + u64::from(life)));
                    log.add(list, now);
                }
                Step::Publish(dt) => {
                    now += u64::from(dt);
                    log.publish(&key, now, HOUR, 0).unwrap();
                }
                Step::Sync => {
                    let Some(update) = log.update_since(receiver.version_of(&public)) else {
                        continue;
                    };
                    match receiver.apply(&update, MAX) {
                        Ok(_) | Err(HeadError::Repeat { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                    assert_mirrors(&receiver, &log);
                }
                Step::Relay => {
                    let Some(update) = receiver.update_for(&public, relay.version_of(&public))
                    else {
                        continue;
                    };
                    let bytes = update.to_bytes();
                    let update = Update::from_bytes(&bytes, MAX).unwrap();
                    relay.apply(&update, MAX).unwrap();
                    let version = receiver.version_of(&public);
                    prop_assert_eq!(relay.version_of(&public), version);
                    prop_assert_eq!(
                        relay.signers[&public].set.root,
                        receiver.signers[&public].set.root
                    );
                    prop_assert_eq!(union(&relay), union(&receiver));
                }
            }
        }
    }
}
