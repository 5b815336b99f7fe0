//! One [`Store`] type for both back ends, so the daemon picks one at start and the join
//! service ([`crate::service::SeedService`]) stays generic over a single store type.

use cordon_protocol::NetworkName;
use libp2p::PeerId;

use crate::store::{
    Counts, InviteRow, IssuedTokenId, IssuedTokenRow, JoinRequestRow, NewToken, PendingFilter,
    PostgresStore, RequestId, RevocationSnapshot, SqliteStore, Store, StoreError, StoreEvent,
    Submitted,
};

/// The seednode's store: SQLite (one seednode, the default) or PostgreSQL (several seednodes
/// of a network sharing one database). Every call goes to the back end it holds.
#[derive(Debug)]
pub enum AnyStore {
    /// One embedded database file.
    Sqlite(SqliteStore),
    /// One PostgreSQL database shared by several seednodes.
    Postgres(PostgresStore),
}

impl From<SqliteStore> for AnyStore {
    fn from(store: SqliteStore) -> Self {
        Self::Sqlite(store)
    }
}

impl From<PostgresStore> for AnyStore {
    fn from(store: PostgresStore) -> Self {
        Self::Postgres(store)
    }
}

/// Calls the method on whichever back end the store holds.
macro_rules! delegate {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            AnyStore::Sqlite(store) => store.$method($($arg),*).await,
            AnyStore::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

impl Store for AnyStore {
    fn is_shared(&self) -> bool {
        match self {
            AnyStore::Sqlite(store) => store.is_shared(),
            AnyStore::Postgres(store) => store.is_shared(),
        }
    }

    fn subscribe(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        match self {
            AnyStore::Sqlite(store) => store.subscribe(),
            AnyStore::Postgres(store) => store.subscribe(),
        }
    }

    async fn submit_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        invite_used: bool,
        now: u64,
    ) -> Result<Submitted, StoreError> {
        delegate!(self.submit_request(network, peer, label, invite_used, now))
    }

    async fn submit_with_invite(
        &self,
        network: &NetworkName,
        peer: &PeerId,
        label: Option<&str>,
        code_hash: [u8; 32],
        now: u64,
    ) -> Result<Submitted, StoreError> {
        delegate!(self.submit_with_invite(network, peer, label, code_hash, now))
    }

    async fn request(&self, id: RequestId) -> Result<Option<JoinRequestRow>, StoreError> {
        delegate!(self.request(id))
    }

    async fn latest_request(
        &self,
        network: &NetworkName,
        peer: &PeerId,
    ) -> Result<Option<JoinRequestRow>, StoreError> {
        delegate!(self.latest_request(network, peer))
    }

    async fn pending(
        &self,
        network: Option<&NetworkName>,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        delegate!(self.pending(network))
    }

    async fn approve(
        &self,
        id: RequestId,
        issued: NewToken,
        decided_by_policy: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        delegate!(self.approve(id, issued, decided_by_policy, now))
    }

    async fn deny(
        &self,
        id: RequestId,
        reason: Option<&str>,
        now: u64,
    ) -> Result<JoinRequestRow, StoreError> {
        delegate!(self.deny(id, reason, now))
    }

    async fn deny_pending(
        &self,
        filter: PendingFilter,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<JoinRequestRow>, StoreError> {
        delegate!(self.deny_pending(filter, reason, now))
    }

    async fn issue_direct(&self, issued: NewToken) -> Result<IssuedTokenRow, StoreError> {
        delegate!(self.issue_direct(issued))
    }

    async fn token(&self, token_id: IssuedTokenId) -> Result<Option<IssuedTokenRow>, StoreError> {
        delegate!(self.token(token_id))
    }

    async fn token_for_request(
        &self,
        request_id: RequestId,
    ) -> Result<Option<IssuedTokenRow>, StoreError> {
        delegate!(self.token_for_request(request_id))
    }

    async fn undelivered_for(&self, peer: &PeerId) -> Result<Vec<IssuedTokenRow>, StoreError> {
        delegate!(self.undelivered_for(peer))
    }

    async fn mark_delivered(
        &self,
        token_id: IssuedTokenId,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        delegate!(self.mark_delivered(token_id, now))
    }

    async fn members(
        &self,
        network: Option<&NetworkName>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        delegate!(self.members(network, now))
    }

    async fn revoke_token(
        &self,
        token_id: IssuedTokenId,
        reason: Option<&str>,
        now: u64,
    ) -> Result<IssuedTokenRow, StoreError> {
        delegate!(self.revoke_token(token_id, reason, now))
    }

    async fn revoke_peer(
        &self,
        peer: &PeerId,
        network: Option<&NetworkName>,
        reason: Option<&str>,
        now: u64,
    ) -> Result<Vec<IssuedTokenRow>, StoreError> {
        delegate!(self.revoke_peer(peer, network, reason, now))
    }

    async fn revoke_id(
        &self,
        revocation_id: &[u8],
        reason: Option<&str>,
        now: u64,
    ) -> Result<bool, StoreError> {
        delegate!(self.revoke_id(revocation_id, reason, now))
    }

    async fn revocations(&self) -> Result<RevocationSnapshot, StoreError> {
        delegate!(self.revocations())
    }

    async fn revoked_entries(
        &self,
        network: &NetworkName,
        now: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        delegate!(self.revoked_entries(network, now))
    }

    async fn revocation_version(&self) -> Result<u64, StoreError> {
        delegate!(self.revocation_version())
    }

    async fn create_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        uses: u32,
        expires_at: u64,
        now: u64,
    ) -> Result<InviteRow, StoreError> {
        delegate!(self.create_invite(code_hash, network, uses, expires_at, now))
    }

    async fn redeem_invite(
        &self,
        code_hash: [u8; 32],
        network: &NetworkName,
        now: u64,
    ) -> Result<bool, StoreError> {
        delegate!(self.redeem_invite(code_hash, network, now))
    }

    async fn invites(&self, network: Option<&NetworkName>) -> Result<Vec<InviteRow>, StoreError> {
        delegate!(self.invites(network))
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        delegate!(self.counts())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::store::StoreLimits;
    use crate::store::suite::{NOW, Opening, mainnet, peer};

    // The whole suite through the enum (on SQLite files: the delegation is the same code for
    // both variants).
    crate::store::suite::run_store_suite!(|dir: &Path| {
        let path = dir.join("seednode.db");
        async move {
            move |limits| -> Opening<AnyStore> {
                let path = path.clone();
                Box::pin(async move { SqliteStore::open(&path, limits).unwrap().into() })
            }
        }
    });

    #[tokio::test]
    async fn the_postgres_variant_reaches_its_database() {
        let options = crate::pg_testing::fresh_database().await;
        let limits = StoreLimits::default();
        let store: AnyStore = PostgresStore::open(&options, limits.clone())
            .await
            .unwrap()
            .into();
        store
            .submit_request(&mainnet(), &peer(1), None, false, NOW)
            .await
            .unwrap();
        let direct = PostgresStore::open(&options, limits).await.unwrap();
        assert_eq!(direct.counts().await.unwrap().pending, 1);
    }
}
