//! The contract of named leases and of the bulk stored-delivery lookup that GitHub recovery relies on.

use std::collections::HashSet;

use super::*;

pub async fn stored_deliveries_names_the_stored_ids_of_one_source_only(f: &dyn Fixture) {
    let store = f.store();
    store_one(store, "guid-1", vec![]).await;
    store_one(store, "guid-2", vec![]).await;
    store.insert_delivery(delivery("gitlab", "guid-3"), vec![]).await.unwrap();
    let asked: Vec<String> = ["guid-1", "guid-2", "guid-3", "guid-4"].map(String::from).to_vec();
    let stored = store.stored_deliveries("github", &asked).await.unwrap();
    assert_eq!(stored, HashSet::from(["guid-1".to_string(), "guid-2".to_string()]));
    assert!(store.stored_deliveries("github", &[]).await.unwrap().is_empty());
    // A page of GitHub's deliveries is 100; a whole lookback may be thousands: one call answers them all.
    let many: Vec<String> = (0..2000).map(|i| format!("guid-{i}")).collect();
    assert_eq!(store.stored_deliveries("github", &many).await.unwrap().len(), 2);
}

pub async fn a_lease_is_held_by_one_owner_until_it_expires_and_its_owner_may_extend_it(f: &dyn Fixture) {
    let store = f.store();
    let now = now_ms();
    assert!(store.take_lease("github:acme", "a", now + 60_000, now).await.unwrap(), "a free lease is taken");
    assert!(!store.take_lease("github:acme", "b", now + 60_000, now).await.unwrap(), "held by a");
    assert!(store.take_lease("github:other", "b", now + 60_000, now).await.unwrap(), "another name is free");
    assert!(store.take_lease("github:acme", "a", now + 120_000, now).await.unwrap(), "its owner extends it");
    assert!(!store.take_lease("github:acme", "b", now + 180_000, now + 100_000).await.unwrap(), "extended");
    let later = now + 120_001;
    assert!(store.take_lease("github:acme", "b", later + 60_000, later).await.unwrap(), "expired: b takes it");
    assert!(!store.take_lease("github:acme", "a", later + 60_000, later).await.unwrap(), "now b holds it");
    assert_eq!(f.rows("leases").await, 2);
}

pub async fn of_concurrent_lease_takers_exactly_one_wins(f: &dyn Fixture) {
    let store = f.store();
    let now = now_ms();
    let takers = (0..8).map(|i| async move { store.take_lease("race", &format!("o{i}"), now + 60_000, now).await });
    let won = futures_util::future::join_all(takers).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(won, 1);
}
