//! The customers' data keys, which the orders context owns: each customer's sensitive values
//! (each order's payment token and email address) are sealed with a key of their own, kept in the `orders`
//! database wrapped by the master key (`DATA_KEYS_MASTER_KEY` or `_FILE`). Erasing a customer
//! deletes their wrapped key: what was sealed with it never opens again, anywhere (the right
//! to erasure in an immutable log: crypto-shredding), and they can place no more orders.
//!
//! Keys are read from the database every time, never kept in memory: an erasure takes effect
//! at once in every replica.

use std::sync::Arc;

use domain::payment::BoxFuture;
use domain::sealing::{Field, SealingError, TokenOpener, TokenSealer};
use service_kit::sealing::{self as seal, Key};
use sqlx::PgPool;
use uuid::Uuid;

/// `DATA_KEYS_MASTER_KEY` (32 bytes, base64) or `DATA_KEYS_MASTER_KEY_FILE` (a file holding
/// that), read once at start; the service does not start without one.
pub fn master_key(env: &service_kit::env::Env) -> anyhow::Result<Key> {
    let Some(text) = env.secret("DATA_KEYS_MASTER_KEY")? else {
        anyhow::bail!(
            "the orders service seals customers' payment tokens with their data keys, wrapped \
             by a master key: set DATA_KEYS_MASTER_KEY (32 random bytes in base64) or \
             DATA_KEYS_MASTER_KEY_FILE (`cargo xtask up` and the Kubernetes secrets make one)"
        );
    };
    Key::from_base64(text.expose()).map_err(|_| {
        anyhow::anyhow!("the data keys' master key is not 32 bytes of standard base64")
    })
}

/// The data keys in the `orders` database.
#[derive(Clone)]
pub struct CustomerKeys {
    pool: PgPool,
    master: Arc<Key>,
}

impl std::fmt::Debug for CustomerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKeys")
    }
}

/// What a customer's row says.
enum Stored {
    Live { key_id: Uuid, key: Key },
    Erased,
}

fn unavailable(e: impl std::fmt::Display) -> SealingError {
    SealingError::Unavailable(e.to_string())
}

impl CustomerKeys {
    pub fn new(pool: PgPool, master: Key) -> Self {
        Self {
            pool,
            master: Arc::new(master),
        }
    }

    /// The customer's data key, made (and stored wrapped) on their first order. Two replicas
    /// making one at once agree on the first stored.
    async fn data_key(&self, customer: Uuid) -> Result<Stored, SealingError> {
        if let Some(stored) = self.stored(customer).await? {
            return Ok(stored);
        }
        let (key_id, key) = (Uuid::new_v4(), Key::generate().map_err(unavailable)?);
        let wrapped = key
            .wrap(&self.master, &seal::data_key_aad(customer, key_id))
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO customer_keys (customer_id, key_id, wrapped) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(customer)
        .bind(key_id)
        .bind(wrapped)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.stored(customer)
            .await?
            .ok_or_else(|| unavailable("the data key just stored is not there"))
    }

    async fn stored(&self, customer: Uuid) -> Result<Option<Stored>, SealingError> {
        let row: Option<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT key_id, wrapped FROM customer_keys WHERE customer_id = $1")
                .bind(customer)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        row.map(|(key_id, wrapped)| self.unwrapped(customer, key_id, wrapped))
            .transpose()
    }

    fn unwrapped(
        &self,
        customer: Uuid,
        key_id: Uuid,
        wrapped: Option<Vec<u8>>,
    ) -> Result<Stored, SealingError> {
        let Some(wrapped) = wrapped else {
            return Ok(Stored::Erased);
        };
        let key = Key::unwrap(
            &wrapped,
            &self.master,
            &seal::data_key_aad(customer, key_id),
        )
        .map_err(|_| {
            unavailable("a data key does not unwrap with the master key (another master key?)")
        })?;
        Ok(Stored::Live { key_id, key })
    }

    /// Erases the customer: their wrapped key is deleted (a tombstone is kept, so they can
    /// place no more orders). True when they had a key.
    pub async fn erase(&self, customer: Uuid) -> Result<bool, sqlx::Error> {
        let had: Option<bool> = sqlx::query_scalar(
            "INSERT INTO customer_keys (customer_id, key_id, wrapped, erased_at) \
             VALUES ($1, $2, NULL, now()) \
             ON CONFLICT (customer_id) DO UPDATE SET wrapped = NULL, \
               erased_at = coalesce(customer_keys.erased_at, now()) \
             RETURNING (xmax <> 0)",
        )
        .bind(customer)
        .bind(Uuid::new_v4())
        .fetch_optional(&self.pool)
        .await?;
        Ok(had.unwrap_or(false))
    }

    /// A sealed `field` of `order_id` opened. A payment token never sealed (from before
    /// sealing) is given back as it is; an address was always sealed, so a clear one is
    /// refused.
    pub async fn open(
        &self,
        order_id: Uuid,
        field: Field,
        token: &str,
    ) -> Result<String, SealingError> {
        let Some(key_id) = seal::key_id_of(token) else {
            return match field {
                Field::PaymentToken => Ok(token.to_owned()),
                Field::Email => Err(SealingError::Invalid),
            };
        };
        let row: Option<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT customer_id, wrapped FROM customer_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        let Some((customer, wrapped)) = row else {
            return Err(SealingError::Invalid);
        };
        match self.unwrapped(customer, key_id, wrapped)? {
            Stored::Erased => Err(SealingError::Erased),
            Stored::Live { key, .. } => {
                seal::open(&key, token, &seal::field_aad(field.name(), order_id))
                    .map_err(|_| SealingError::Invalid)
            }
        }
    }
}

impl TokenSealer for CustomerKeys {
    fn seal<'a>(
        &'a self,
        customer_id: Uuid,
        order_id: Uuid,
        field: Field,
        value: &'a str,
    ) -> BoxFuture<'a, Result<String, SealingError>> {
        Box::pin(async move {
            match self.data_key(customer_id).await? {
                Stored::Erased => Err(SealingError::Erased),
                Stored::Live { key_id, key } => seal::seal(
                    &key,
                    key_id,
                    value,
                    &seal::field_aad(field.name(), order_id),
                )
                .map_err(unavailable),
            }
        })
    }
}

impl TokenOpener for CustomerKeys {
    fn open<'a>(
        &'a self,
        order_id: Uuid,
        token: &'a str,
    ) -> BoxFuture<'a, Result<String, SealingError>> {
        Box::pin(self.open(order_id, Field::PaymentToken, token))
    }
}
