//! Token parsing + verification over arbitrary bytes: never panics, and anything accepted names
//! the presenter and the configured network.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use cordon_membership::{AccessList, NetworkTrust, PeerId, SecretKey, Verifier, VerifierConfig};

static SETUP: LazyLock<(Verifier, PeerId, SystemTime)> = LazyLock::new(|| {
    let anchor = SecretKey::from_seed([1; 32]);
    let access = AccessList::new([NetworkTrust {
        name: "mainnet".into(),
        anchors: vec![anchor.public()],
        strict: false,
    }])
    .expect("access list");
    let presenter = SecretKey::from_seed([3; 32]).peer_id();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    (Verifier::new(VerifierConfig::default(), access), presenter, now)
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (verifier, presenter, now) = &*SETUP;
    if let Ok(v) = verifier.verify_membership_uncached(data, presenter, *now) {
        assert_eq!(&v.subject, presenter);
        assert_eq!(v.network, "mainnet");
    }
    let _ = verifier.verify_delegation(data, presenter, *now);
});
