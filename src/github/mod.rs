//! github: never lose a GitHub event — GitHub does not retry a failed delivery, so hookgate asks GitHub's API
//! for the hook's failed deliveries it never stored and has GitHub send them again (issue 18).
//!
//! `settings` reads a source's `recovery` section, `api` talks to GitHub, `recovery` decides and runs one
//! round; this file holds what an instance keeps between rounds ([`Recoverer`]) and the loop that runs a
//! round per source every `every`, one instance at a time (a lease in the store).

pub mod api;
pub mod app;
pub mod credential;
pub mod lend;
pub mod recovery;
pub mod settings;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::live::LiveHandle;
use crate::store::{new_id, now_ms, DynStore, Millis};
pub use api::{GithubError, HookDelivery};
pub use recovery::{Report, RoundError, Verdict};
pub use settings::{Credentials, Hook, Recovery};

/// A round's view overlaps the previous one by this much: GitHub may list an attempt a little after its
/// `delivered_at` (a timeout is recorded when it ends).
const OVERLAP: Duration = Duration::from_secs(15 * 60);

/// Why a round did not run or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("source `{0}` does not exist")]
    UnknownSource(String),
    #[error("source `{0}` has no recovery section (provider = \"github\" with recovery = {{ hook, token }})")]
    NotConfigured(String),
    #[error("another instance holds the recovery lease of source `{0}`; it recovers for every instance")]
    Leased(String),
    /// A redelivery now would be refused (404 or 503) and not be asked for again: wait until it takes webhooks.
    #[error("source `{0}` is off or paused: it would refuse the redeliveries; resume it first")]
    NotTaking(String),
    #[error(transparent)]
    Round(#[from] RoundError),
}

/// The lease that lets one instance at a time recover a source.
pub fn lease_name(source: &str) -> String {
    format!("github-recovery:{source}")
}

/// What one instance remembers about a source between rounds.
#[derive(Default)]
struct SourceMemory {
    /// One round at a time per source on this instance (the loop and an operator's `recover`).
    round: tokio::sync::Mutex<()>,
    /// GUIDs asked for, with when: not asked again while inside the lookback.
    asked: Mutex<HashMap<String, Millis>>,
    /// When the last complete round started: the next looks back only to it (minus [`OVERLAP`]).
    last_complete: Mutex<Option<Millis>>,
}

/// The recovery of every GitHub source on this instance: shared by the loop and the admin API.
pub struct Recoverer {
    /// This instance's name in the lease table.
    owner: String,
    http: reqwest::Client,
    sources: Mutex<HashMap<String, Arc<SourceMemory>>>,
}

impl Default for Recoverer {
    fn default() -> Self {
        Self::new()
    }
}

/// The HTTP client for GitHub's API: no redirects (one would carry the token to wherever it points).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

impl Recoverer {
    pub fn new() -> Self {
        Recoverer {
            owner: format!("{}-{}", std::process::id(), new_id()),
            http: http_client(),
            sources: Mutex::default(),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn memory(&self, source: &str) -> Arc<SourceMemory> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).entry(source.to_string()).or_default().clone()
    }

    /// The source's recovery section, from the configuration running now.
    pub fn recovery_of(live: &LiveHandle, source: &str) -> Result<Recovery, RecoverError> {
        let current = live.current();
        let config = current.config.source(source).ok_or_else(|| RecoverError::UnknownSource(source.into()))?;
        config.recovery.clone().ok_or_else(|| RecoverError::NotConfigured(source.into()))
    }

    /// GitHub's attempts since `since` (at most `limit`), each with hookgate's verdict on its GUID.
    pub async fn deliveries(
        &self,
        store: &DynStore,
        live: &LiveHandle,
        source: &str,
        since: Millis,
        limit: usize,
    ) -> Result<Vec<(HookDelivery, Verdict)>, RecoverError> {
        let recovery = Self::recovery_of(live, source)?;
        let client = api::Client::new(&self.http, &recovery);
        let (deliveries, stored) = recovery::survey(&**store, source, &client, since, limit).await?;
        let asked = self.asked(source, now_ms() - recovery.lookback.as_millis() as Millis);
        let verdicts = recovery::verdicts(&deliveries, &stored, &asked);
        Ok(deliveries
            .into_iter()
            .map(|d| {
                let verdict = verdicts.get(&d.guid).copied().unwrap_or(Verdict::Missing);
                (d, verdict)
            })
            .collect())
    }

    /// The GUIDs asked for since `since`; older ones are forgotten.
    fn asked(&self, source: &str, since: Millis) -> HashSet<String> {
        let memory = self.memory(source);
        let mut asked = memory.asked.lock().unwrap_or_else(|p| p.into_inner());
        asked.retain(|_, at| *at >= since);
        asked.keys().cloned().collect()
    }

    /// Run one round for `source` now, if this instance holds (or can take) its lease. `since` overrides how
    /// far back it looks (never past the lookback).
    pub async fn recover(
        &self,
        store: &DynStore,
        live: &LiveHandle,
        source: &str,
        since: Option<Millis>,
    ) -> Result<Report, RecoverError> {
        let recovery = Self::recovery_of(live, source)?;
        let enabled = live.current().config.source(source).is_some_and(|s| s.enabled);
        if !enabled || live.shared.source_paused(source).is_some() {
            return Err(RecoverError::NotTaking(source.into()));
        }
        let memory = self.memory(source);
        let _one_at_a_time = memory.round.lock().await;
        let started = now_ms();
        // Held past the next round's start, so the instance that recovers keeps doing it while it lives.
        let until = started + (recovery.every + Duration::from_secs(60)).as_millis() as Millis;
        if !store.take_lease(&lease_name(source), &self.owner, until, started).await.map_err(RoundError::from)? {
            return Err(RecoverError::Leased(source.into()));
        }
        let oldest = started - recovery.lookback.as_millis() as Millis;
        let since = match since {
            Some(since) => since.max(oldest),
            None => {
                let last = *memory.last_complete.lock().unwrap_or_else(|p| p.into_inner());
                last.map_or(oldest, |t| (t - OVERLAP.as_millis() as Millis).max(oldest))
            }
        };
        let asked = self.asked(source, oldest);
        let client = api::Client::new(&self.http, &recovery);
        let remember = |guid: &str| {
            memory.asked.lock().unwrap_or_else(|p| p.into_inner()).insert(guid.to_string(), now_ms());
        };
        let report = recovery::round(&**store, source, &client, since, &asked, remember).await?;
        *memory.last_complete.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        Ok(report)
    }
}

/// Run a round for every source with a recovery section, each every `every`, until `shutdown`. An error
/// (logged once per round) puts the next round off by GitHub's wait, or by `every` but at least a minute.
pub async fn run(recoverer: Arc<Recoverer>, store: DynStore, live: LiveHandle, shutdown: CancellationToken) {
    let mut next: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let current = live.current();
        let due: Vec<(String, Duration)> = current
            .config
            .sources
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.recovery.as_ref()?.every)))
            .filter(|(name, _)| next.get(name).is_none_or(|at| *at <= tokio::time::Instant::now()))
            .collect();
        drop(current);
        for (source, every) in due {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                result = recoverer.recover(&store, &live, &source, None) => result,
            };
            let wait = match result {
                Ok(report) => {
                    if report.failed > 0 || !report.redeliveries.is_empty() {
                        tracing::info!(
                            source = %source, listed = report.listed, failed = report.failed,
                            redelivered = report.redeliveries.len(), already_asked = report.already_asked,
                            "GitHub recovery round"
                        );
                    } else {
                        tracing::debug!(source = %source, listed = report.listed, "GitHub recovery round: nothing missing");
                    }
                    every
                }
                Err(RecoverError::Leased(_)) => {
                    tracing::debug!(source = %source, "another instance recovers this source");
                    every
                }
                // Checked again at every tick, so the round runs as soon as the source takes webhooks again.
                Err(RecoverError::NotTaking(_)) => Duration::ZERO,
                Err(e) => {
                    let backoff = match &e {
                        RecoverError::Round(RoundError::Github(g)) => g.backoff(),
                        _ => None,
                    };
                    tracing::warn!(source = %source, error = %e, "GitHub recovery round failed");
                    backoff.unwrap_or(every.max(api::DEFAULT_BACKOFF))
                }
            };
            next.insert(source, tokio::time::Instant::now() + wait);
        }
    }
}
