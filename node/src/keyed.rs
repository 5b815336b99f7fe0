//! [`Keyed`]: one instance of a behaviour per key, composed into one behaviour.
//!
//! Cordon runs one Kademlia per network. `#[derive(NetworkBehaviour)]` needs one field per
//! instance, which fixes their number in the type; [`Keyed`] holds any number of instances of
//! one behaviour type under their keys (network names) and gives each connection libp2p's
//! [`MultiHandler`], which routes every stream and handler event to the instance of its key.
//!
//! Invariants:
//! - Keys are fixed at construction: a connection's handler holds one sub-handler per key, so a
//!   key added later would have no handler on existing connections.
//! - Events keep their key in both directions: `(K, event)` out of the behaviour, `(K, event)`
//!   into the handler, so no instance ever sees another's traffic.
//! - Instances are polled round-robin from a rotating start, so a busy one cannot starve the
//!   others.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::{Endpoint, Multiaddr, transport::PortUse};
use libp2p::swarm::handler::multi::MultiHandler;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};

/// One `B` per key. See the [module documentation](self).
pub struct Keyed<K, B> {
    instances: Vec<(K, B)>,
    index: HashMap<K, usize>,
    /// Where the next `poll` starts.
    next: usize,
}

impl<K: fmt::Debug, B> fmt::Debug for Keyed<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field(
                "keys",
                &self.instances.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<K, B> Keyed<K, B>
where
    K: Clone + Eq + Hash,
{
    /// Builds from `(key, instance)` pairs; a repeated key keeps its first instance.
    pub fn new(instances: impl IntoIterator<Item = (K, B)>) -> Self {
        let mut out = Self {
            instances: Vec::new(),
            index: HashMap::new(),
            next: 0,
        };
        for (key, instance) in instances {
            if out.index.contains_key(&key) {
                continue;
            }
            out.index.insert(key.clone(), out.instances.len());
            out.instances.push((key, instance));
        }
        out
    }

    /// The instance of `key`.
    pub fn get(&self, key: &K) -> Option<&B> {
        self.index.get(key).map(|i| &self.instances[*i].1)
    }

    /// The instance of `key`, mutably.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut B> {
        self.index.get(key).map(|i| &mut self.instances[*i].1)
    }

    /// Every key with its instance, in construction order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &B)> {
        self.instances.iter().map(|(k, b)| (k, b))
    }

    /// Every key with its instance, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&K, &mut B)> {
        self.instances.iter_mut().map(|(k, b)| (&*k, b))
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether there is no instance.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

fn handlers<K, H>(
    built: impl Iterator<Item = Result<(K, H), ConnectionDenied>>,
) -> Result<MultiHandler<K, H>, ConnectionDenied>
where
    K: Clone + fmt::Debug + Hash + Eq + Send + 'static,
    H: libp2p::swarm::ConnectionHandler,
{
    let built = built.collect::<Result<Vec<_>, _>>()?;
    MultiHandler::try_from_iter(built).map_err(ConnectionDenied::new)
}

impl<K, B> NetworkBehaviour for Keyed<K, B>
where
    K: Clone + fmt::Debug + Hash + Eq + Send + 'static,
    B: NetworkBehaviour,
{
    type ConnectionHandler = MultiHandler<K, THandler<B>>;
    type ToSwarm = (K, B::ToSwarm);

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        for (_, b) in &mut self.instances {
            b.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)?;
        }
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        handlers(self.instances.iter_mut().map(|(k, b)| {
            b.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
                .map(|h| (k.clone(), h))
        }))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for (_, b) in &mut self.instances {
            for addr in b.handle_pending_outbound_connection(
                connection_id,
                maybe_peer,
                addresses,
                effective_role,
            )? {
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
        Ok(out)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        handlers(self.instances.iter_mut().map(|(k, b)| {
            b.handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(|h| (k.clone(), h))
        }))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        for (_, b) in &mut self.instances {
            b.on_swarm_event(event);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        (key, event): THandlerOutEvent<Self>,
    ) {
        if let Some(b) = self.get_mut(&key) {
            b.on_connection_handler_event(peer_id, connection_id, event);
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let n = self.instances.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            let (key, b) = &mut self.instances[i];
            if let Poll::Ready(event) = b.poll(cx) {
                self.next = (i + 1) % n;
                let in_key = key.clone();
                let out_key = key.clone();
                return Poll::Ready(
                    event
                        .map_out(move |e| (out_key, e))
                        .map_in(move |e| (in_key, e)),
                );
            }
        }
        Poll::Pending
    }
}
