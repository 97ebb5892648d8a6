//! One async lock per key, for a driver's calls that must not overlap per object but may run side by
//! side across objects: per claim UID, so a claim's prepare and unprepare never overlap while
//! different claims run at once (the kubelet calls them concurrently); per pod sandbox id, so two NRI
//! events of one sandbox never undo its setup twice at once. An entry lives only while someone holds
//! or waits for it, so the map does not grow with every key ever seen.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use dra_kubelet_plugin::locks::KeyedLocks;
//! let locks = KeyedLocks::default();
//! {
//!     let _claim = locks.lock("uid-1").await;
//!     let _other = locks.lock("uid-2").await; // another key: not blocked
//!     assert_eq!(locks.len(), 2);
//! }
//! assert_eq!(locks.len(), 0);
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

type KeyMutex = Arc<tokio::sync::Mutex<()>>;

/// The locks, by key.
#[derive(Debug, Default)]
pub struct KeyedLocks(Mutex<HashMap<String, KeyMutex>>);

/// A held lock; released (and its entry removed when nobody waits) on drop.
#[derive(Debug)]
pub struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Option<KeyMutex>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, KeyMutex>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the lock of `key`. A wait given up (its future dropped, even after the lock was
    /// handed to it) leaves no entry behind: the guard is made before the wait, and its drop
    /// removes the entry as a release does.
    pub async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        let mut held = KeyedGuard {
            locks: self,
            key: key.to_owned(),
            lock: Some(lock.clone()),
            guard: None,
        };
        held.guard = Some(lock.lock_owned().await);
        held
    }

    /// How many keys have an entry: those held or waited for.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no key is held or waited for.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Clones are made under the map lock: two owners (the map and this guard) means nobody
        // else holds or waits for it.
        if let Some(lock) = self.lock.take()
            && Arc::strong_count(&lock) == 2
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::KeyedLocks;

    #[tokio::test]
    async fn one_key_waits_for_its_holder_others_do_not_and_entries_go_when_released() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;
        // Another key is free at once.
        drop(locks.lock("b").await);
        assert_eq!(locks.len(), 1);
        // The same key waits until the holder lets go.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _a = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second holder of the same key");
        assert_eq!(locks.len(), 1, "the waiter shares the holder's entry");
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_no_entry_behind() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _a = locks.lock("a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        assert!(locks.is_empty());
    }

    /// The lock is handed to a waiter when its holder lets go; the waiter is dropped before it runs
    /// again (the kubelet gave up on the call).
    #[tokio::test]
    async fn a_waiter_dropped_after_it_was_handed_the_lock_leaves_no_entry_behind() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        let mut waiter = Box::pin(locks.lock("a"));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiter.as_mut().poll(&mut context).is_pending());
        drop(held);
        drop(waiter);
        assert!(locks.is_empty(), "{} entries left", locks.len());
        // The key can be locked again.
        drop(locks.lock("a").await);
        assert!(locks.is_empty());
    }
}
