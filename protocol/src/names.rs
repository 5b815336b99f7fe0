//! Versioned protocol names. Changing the encoding or meaning of a message
//! means a new name, never an in-place edit.

use libp2p::StreamProtocol;

use crate::NetworkName;

/// The membership exchange: the dialer presents its tokens on every new
/// connection; the listener answers with a per-network outcome and, for each
/// network it accepted, its own token (`/1` took a second request for that).
pub const MEMBERSHIP_PROTOCOL: StreamProtocol = StreamProtocol::new("/cordon/membership/2");

/// Join requests to a seednode, status polls, and token delivery.
pub const JOIN_PROTOCOL: StreamProtocol = StreamProtocol::new("/cordon/join/1");

/// Predefined remote commands, each authorized against the caller's token.
pub const RPC_PROTOCOL: StreamProtocol = StreamProtocol::new("/cordon/rpc/1");

/// Revocation heads and entries, exchanged between proven members of a network.
pub const REVOCATION_PROTOCOL: StreamProtocol = StreamProtocol::new("/cordon/revocations/1");

/// The Kademlia protocol name of one network: `/cordon/<network>/kad/1.0.0`.
///
/// One Kademlia instance runs per network, so peers of different networks
/// never share a routing table even when connected.
pub fn kad_protocol(network: &NetworkName) -> StreamProtocol {
    // The only failure of `try_from_owned` is a missing leading '/', which
    // the format string rules out; a validated name cannot contain '/'.
    #[allow(clippy::expect_used)]
    StreamProtocol::try_from_owned(format!("/cordon/{network}/kad/1.0.0"))
        .expect("protocol name starts with '/'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_versioned() {
        assert_eq!(MEMBERSHIP_PROTOCOL.as_ref(), "/cordon/membership/2");
        assert_eq!(JOIN_PROTOCOL.as_ref(), "/cordon/join/1");
        assert_eq!(RPC_PROTOCOL.as_ref(), "/cordon/rpc/1");
    }

    #[test]
    fn kad_name_embeds_network() {
        let net: NetworkName = "acme.lab-1".parse().unwrap();
        assert_eq!(kad_protocol(&net).as_ref(), "/cordon/acme.lab-1/kad/1.0.0");
    }
}
