//! github::recovery: one recovery round — list what GitHub tried to deliver, pick what failed and hookgate
//! never stored, ask GitHub to send it again. The choice ([`select`]) is pure and tested apart from the I/O.
//!
//! A redelivery keeps its `X-GitHub-Delivery` GUID, so the store's dedup makes asking twice harmless; still,
//! a GUID asked for is remembered (by the caller) and not asked for again within the lookback, so a delivery
//! hookgate refuses on purpose (a bad signature, a disabled source) costs one redelivery, not one per round.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::api::{Client, GithubError, HookDelivery};
use crate::store::{Millis, Store, StoreError};

/// Pages one round reads at most (100 deliveries each): three days of a hook busier than this are not
/// recovered further back than the newest 100 000 attempts.
pub const MAX_PAGES: usize = 1000;

/// What became of one GUID GitHub lists, as the CLI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// hookgate stored it.
    Stored,
    /// Not stored, but an attempt (the first or a redelivery) was answered 2xx.
    Delivered,
    /// Failed and not stored; redelivery already asked for.
    Asked,
    /// Failed and not stored: the next round asks for it.
    Missing,
}

/// The verdict on every GUID in `deliveries` (newest first, as GitHub lists them).
pub fn verdicts(
    deliveries: &[HookDelivery],
    stored: &HashSet<String>,
    asked: &HashSet<String>,
) -> HashMap<String, Verdict> {
    let delivered: HashSet<&str> = deliveries.iter().filter(|d| d.succeeded()).map(|d| d.guid.as_str()).collect();
    let mut out = HashMap::new();
    for d in deliveries.iter().filter(|d| !d.guid.is_empty()) {
        let verdict = if stored.contains(&d.guid) {
            Verdict::Stored
        } else if delivered.contains(d.guid.as_str()) {
            Verdict::Delivered
        } else if asked.contains(&d.guid) {
            Verdict::Asked
        } else {
            Verdict::Missing
        };
        out.insert(d.guid.clone(), verdict);
    }
    out
}

/// The deliveries to ask GitHub to send again: for each GUID whose every attempt failed, that hookgate has
/// not stored and that was not asked for already, its newest attempt (GitHub redelivers a delivery id).
pub fn select<'a>(
    deliveries: &'a [HookDelivery],
    stored: &HashSet<String>,
    asked: &HashSet<String>,
) -> Vec<&'a HookDelivery> {
    let verdicts = verdicts(deliveries, stored, asked);
    let mut seen = HashSet::new();
    deliveries
        .iter()
        .filter(|d| verdicts.get(&d.guid) == Some(&Verdict::Missing))
        .filter(|d| seen.insert(d.guid.clone()))
        .collect()
}

/// Read the hook's deliveries back to `since` (Unix ms), newest first, following the `Link` cursor.
pub async fn list_since(client: &Client<'_>, since: Millis, limit: usize) -> Result<Vec<HookDelivery>, GithubError> {
    let mut all = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let (page, _) = client.list(next.as_deref()).await?;
        let reached_since = page.deliveries.iter().any(|d| d.delivered_ms().is_some_and(|t| t < since));
        all.extend(page.deliveries.into_iter().filter(|d| d.delivered_ms().is_none_or(|t| t >= since)));
        if reached_since || all.len() >= limit {
            break;
        }
        match page.next {
            Some(url) => next = Some(url),
            None => break,
        }
    }
    all.truncate(limit);
    Ok(all)
}

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One redelivery asked for, or refused.
#[derive(Debug, Clone, Serialize)]
pub struct Asked {
    pub guid: String,
    pub event: String,
    /// GitHub's id of the attempt asked to be sent again.
    pub id: u64,
    /// `requested` (GitHub said 202), or `refused` (422: GitHub will not redeliver it).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a round saw and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Attempts listed within the lookback.
    pub listed: usize,
    /// GUIDs whose every attempt failed and that hookgate has not stored.
    pub failed: usize,
    pub redeliveries: Vec<Asked>,
    /// Failed GUIDs left alone because redelivery was already asked for.
    pub already_asked: usize,
}

/// The source's view of the lookback: GitHub's attempts and which GUIDs hookgate stored.
pub async fn survey(
    store: &dyn Store,
    source: &str,
    client: &Client<'_>,
    since: Millis,
    limit: usize,
) -> Result<(Vec<HookDelivery>, HashSet<String>), RoundError> {
    let deliveries = list_since(client, since, limit).await?;
    let mut guids: Vec<String> = deliveries.iter().map(|d| d.guid.clone()).filter(|g| !g.is_empty()).collect();
    guids.sort();
    guids.dedup();
    let stored = store.stored_deliveries(source, &guids).await?;
    Ok((deliveries, stored))
}

/// One round for `source`: survey, select, ask. `remember` is called for each GUID asked for (whether GitHub
/// accepted or refused it) before the next is asked, so a round cut short by a rate limit keeps what it did.
pub async fn round(
    store: &dyn Store,
    source: &str,
    client: &Client<'_>,
    since: Millis,
    asked: &HashSet<String>,
    mut remember: impl FnMut(&str),
) -> Result<Report, RoundError> {
    let (deliveries, stored) = survey(store, source, client, since, MAX_PAGES * super::api::PER_PAGE).await?;
    let verdicts = verdicts(&deliveries, &stored, asked);
    let mut report = Report {
        listed: deliveries.len(),
        failed: verdicts.values().filter(|v| matches!(v, Verdict::Missing | Verdict::Asked)).count(),
        already_asked: verdicts.values().filter(|v| **v == Verdict::Asked).count(),
        redeliveries: Vec::new(),
    };
    for d in select(&deliveries, &stored, asked) {
        let (outcome, message) = match client.redeliver(d.id).await {
            Ok(_) => ("requested", None),
            Err(GithubError::Unprocessable(message)) => ("refused", Some(message)),
            Err(e) => {
                metrics::counter!(crate::metrics::GITHUB_REDELIVERIES, "source" => source.to_string(), "outcome" => "failed")
                    .increment(1);
                tracing::warn!(source = %source, guid = %d.guid, event = %d.event, github_delivery = d.id, error = %e, "redelivery not asked");
                return Err(e.into());
            }
        };
        remember(&d.guid);
        metrics::counter!(crate::metrics::GITHUB_REDELIVERIES, "source" => source.to_string(), "outcome" => outcome)
            .increment(1);
        match &message {
            None => {
                let (guid, event) = (&d.guid, &d.event);
                tracing::info!(%source, %guid, %event, github_delivery = d.id, %outcome, "asked GitHub to redeliver")
            }
            Some(m) => {
                let (guid, event) = (&d.guid, &d.event);
                tracing::warn!(%source, %guid, %event, github_delivery = d.id, %outcome, reason = %m, "GitHub will not redeliver")
            }
        }
        report.redeliveries.push(Asked { guid: d.guid.clone(), event: d.event.clone(), id: d.id, outcome, message });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: u64, guid: &str, status_code: u16) -> HookDelivery {
        HookDelivery {
            id,
            guid: guid.into(),
            delivered_at: "2026-12-01T10:00:00Z".into(),
            redelivery: false,
            status: String::new(),
            status_code,
            event: "push".into(),
            action: None,
        }
    }

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn ids(chosen: Vec<&HookDelivery>) -> Vec<u64> {
        chosen.into_iter().map(|d| d.id).collect()
    }

    #[test]
    fn failed_attempts_of_unstored_guids_are_chosen_once_each_newest_first() {
        // Newest first: g1 failed twice (a redelivery failed too), g2 could not connect, g3 was delivered.
        let list = [attempt(5, "g1", 503), attempt(4, "g2", 0), attempt(3, "g3", 202), attempt(1, "g1", 503)];
        assert_eq!(ids(select(&list, &set(&[]), &set(&[]))), [5, 4]);
    }

    #[test]
    fn a_guid_hookgate_stored_is_never_chosen_even_if_github_saw_a_failure() {
        // hookgate stored it but answered too late for GitHub (a timeout): the store is the truth.
        let list = [attempt(2, "g1", 0), attempt(1, "g2", 500)];
        assert_eq!(ids(select(&list, &set(&["g1"]), &set(&[]))), [1]);
    }

    #[test]
    fn a_guid_whose_later_redelivery_succeeded_is_handled() {
        let list = [attempt(3, "g1", 202), attempt(2, "g1", 503), attempt(1, "g2", 503)];
        assert_eq!(ids(select(&list, &set(&[]), &set(&[]))), [1]);
        let v = verdicts(&list, &set(&[]), &set(&[]));
        assert_eq!((v["g1"], v["g2"]), (Verdict::Delivered, Verdict::Missing));
    }

    #[test]
    fn a_guid_already_asked_for_is_not_asked_again() {
        let list = [attempt(3, "g1", 503), attempt(2, "g2", 503)];
        assert_eq!(ids(select(&list, &set(&[]), &set(&["g1"]))), [2]);
        assert_eq!(verdicts(&list, &set(&[]), &set(&["g1"]))["g1"], Verdict::Asked);
    }

    #[test]
    fn redirects_and_client_errors_are_failures_and_attempts_without_a_guid_are_skipped() {
        let list = [attempt(4, "g1", 301), attempt(3, "g2", 401), attempt(2, "", 503), attempt(1, "g3", 200)];
        assert_eq!(ids(select(&list, &set(&[]), &set(&[]))), [4, 3]);
        assert!(select(&[], &set(&[]), &set(&[])).is_empty());
    }
}
