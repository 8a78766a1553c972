//! Each customer's share of the commands in flight to a context: one customer's slow sagas
//! (payments that never answer, say) wait for their own places and never take the places of
//! everyone else's.
//!
//! A step takes its customer's place first, then the context's (`driver.rs`): a customer over
//! their share waits without holding one of the context's places.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use messaging::BoundedContext;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

type Key = (Uuid, BoundedContext);

/// The places per customer and context, made when first needed and forgotten when no step
/// holds or waits for one.
pub struct CustomerShares {
    per_customer: usize,
    open: Arc<Mutex<HashMap<Key, Arc<Semaphore>>>>,
}

/// One step's place in its customer's share; the place is given back when it is dropped.
pub struct Place {
    permit: Option<OwnedSemaphorePermit>,
    key: Key,
    open: Arc<Mutex<HashMap<Key, Arc<Semaphore>>>>,
}

impl CustomerShares {
    /// `per_customer` commands in flight to one context for one customer at most.
    pub fn new(per_customer: usize) -> Self {
        Self {
            per_customer,
            open: Arc::default(),
        }
    }

    /// Waits for a place in `customer`'s share of `context`.
    pub async fn place(&self, customer: Uuid, context: BoundedContext) -> Place {
        let key = (customer, context);
        let semaphore = self
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_customer)))
            .clone();
        let permit = semaphore.acquire_owned().await.ok();
        Place {
            permit,
            key,
            open: self.open.clone(),
        }
    }

    /// How many customers' shares are held or waited for now (what the map holds).
    pub fn customers(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Semaphore>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Nobody else holds or waits for this customer's places: forget them.
        if open
            .get(&self.key)
            .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
        {
            open.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_customer_over_their_share_waits_and_others_do_not() {
        let shares = Arc::new(CustomerShares::new(2));
        let (greedy, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let payments = BoundedContext::Payments;
        let held = [
            shares.place(greedy, payments).await,
            shares.place(greedy, payments).await,
        ];
        let third = tokio::spawn({
            let shares = shares.clone();
            async move { shares.place(greedy, payments).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !third.is_finished(),
            "the greedy customer's third step waits"
        );
        // Another customer, and the same customer on another context, go at once.
        let _theirs = tokio::time::timeout(Duration::from_millis(1), shares.place(other, payments))
            .await
            .expect("another customer is not slowed");
        let _stock = tokio::time::timeout(
            Duration::from_millis(1),
            shares.place(greedy, BoundedContext::Inventory),
        )
        .await
        .expect("their own steps on another context are not slowed");
        drop(held);
        let third = tokio::time::timeout(Duration::from_millis(1), third)
            .await
            .expect("a freed place is taken")
            .unwrap();
        drop(third);
        drop(_theirs);
        drop(_stock);
        assert_eq!(
            shares.customers(),
            0,
            "forgotten once nobody holds or waits"
        );
    }
}
