//! Forged membership tokens, as an attacker holding nothing but a network's delegation (which
//! its seednodes present to whoever asks) can make them, for attack tests and `scripts/flood`.
//! Each is distinct and takes no secret of the network.

use biscuit_auth::builder::BlockBuilder;
use biscuit_auth::macros::fact;
use cordon_membership::{PublicKey, SecretKey};

/// `delegation` with a membership block naming `key`'s peer as a `member`, signed by `key`.
/// With `claim`, the block claims `claim`'s signature instead (put the seednode's key there):
/// then it passes every check short of the signatures, and only a full verification refuses
/// it; without, the block's signer is not the delegated seednode, which shows without any
/// signature check. Panics if `delegation` is not a biscuit.
pub fn membership(delegation: &[u8], key: &SecretKey, claim: Option<&PublicKey>) -> Vec<u8> {
    let unverified = biscuit_auth::UnverifiedBiscuit::from(delegation).expect("a delegation");
    let request = unverified
        .third_party_request()
        .expect("a third-party request");
    let block = BlockBuilder::new()
        .context("cordon-membership/2".into())
        .fact(fact!("node({p})", p = key.peer_id().to_bytes()))
        .expect("a fact")
        .fact(fact!("role({r})", r = "member".to_owned()))
        .expect("a fact");
    let mut signed = request
        .create_block(&key.biscuit_private(), block)
        .expect("a block")
        .serialize()
        .expect("serialized");
    if let Some(claimed) = claim {
        // The signer's key follows the block, whose `node` fact holds the same 32 bytes inside
        // the peer id: replace the last occurrence.
        let ours = key.public();
        let at = signed
            .windows(32)
            .rposition(|w| w == ours.as_bytes())
            .expect("the signer's key in the block");
        signed[at..at + 32].copy_from_slice(claimed.as_bytes());
    }
    unverified
        .append_third_party(&signed)
        .expect("appended")
        .to_vec()
        .expect("encoded")
}
