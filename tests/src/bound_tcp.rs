//! A dial-only TCP transport whose connections leave from a chosen local address, for attacks
//! "from many source addresses" on one machine: each client binds its socket to its own
//! loopback address (127.0.0.2, 127.0.0.3, ...) before connecting. libp2p's own TCP transport
//! cannot do this (its port reuse binds the unspecified address), and a target only applies
//! per-address limits to addresses it does not exempt (127.0.0.1 is exempt by default).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{BoxFuture, Ready};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, Transport, TransportError, TransportEvent, upgrade,
};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, noise, yamux};

/// See the [module documentation](self).
#[derive(Debug, Clone, Copy)]
pub struct BoundTcp {
    source: Ipv4Addr,
}

impl BoundTcp {
    /// Dials from `source` (any local IPv4 address; on loopback, 127.0.0.0/8).
    pub fn new(source: Ipv4Addr) -> Self {
        Self { source }
    }
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(a),
            Protocol::Tcp(p) => port = Some(p),
            Protocol::P2p(_) => {}
            _ => return None,
        }
    }
    Some(SocketAddr::new(ip?.into(), port?))
}

impl Transport for BoundTcp {
    type Output = libp2p::tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = Ready<Result<Self::Output, io::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, io::Error>>;

    fn listen_on(
        &mut self,
        _: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let Some(remote) = socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let source = self.source;
        Ok(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source.into(), 0))?;
            let stream = socket.connect(remote).await?;
            stream.set_nodelay(true)?;
            Ok(libp2p::tcp::tokio::TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Poll::Pending
    }
}

/// [`BoundTcp`] from `source` with the same upgrades as Cordon's transport (Noise, Yamux),
/// ready for `SwarmBuilder::with_other_transport`. Panics if Noise refuses the key (it takes
/// every Ed25519 key).
pub fn transport(
    keypair: &libp2p::identity::Keypair,
    source: Ipv4Addr,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    let noise = noise::Config::new(keypair).expect("noise accepts an Ed25519 key");
    BoundTcp::new(source)
        .upgrade(upgrade::Version::V1)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed()
}
