//! live: what is running now — the configuration with its compiled routes and rate limiters, swappable on
//! reload, and this instance's copy of the route and source state all instances share (see [`shared`]).

pub mod shared;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::{DefaultDirectRateLimiter, Quota};

use crate::config::{Config, ConfigError, RateLimit};
use crate::route::Routes;
use shared::SharedState;

/// A configuration ready to serve: validated, routes compiled, one limiter per rate-limited source.
pub struct Live {
    pub config: Config,
    pub routes: Routes,
    pub limiters: HashMap<String, Arc<DefaultDirectRateLimiter>>,
}

impl Live {
    pub fn build(config: Config) -> Result<Self, ConfigError> {
        let routes = Routes::compile(&config)?;
        let limiters = config
            .sources
            .iter()
            .filter_map(|s| s.rate_limit.as_ref().map(|r| (s.name.clone(), Arc::new(limiter(r)))))
            .collect();
        Ok(Live { config, routes, limiters })
    }
}

fn limiter(rate: &RateLimit) -> DefaultDirectRateLimiter {
    DefaultDirectRateLimiter::direct(quota(rate))
}

/// `rate.count` per `rate.per`, all of which may come at once.
pub fn quota(rate: &RateLimit) -> Quota {
    let count = NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN);
    let period = rate.per / count.get();
    Quota::with_period(period.max(std::time::Duration::from_nanos(1))).expect("period is positive").allow_burst(count)
}

/// Shared handle to the live configuration (readers take a cheap `Arc` snapshot) and to the shared route and
/// source state, which outlives reloads.
#[derive(Clone)]
pub struct LiveHandle {
    live: Arc<RwLock<Arc<Live>>>,
    pub shared: Arc<SharedState>,
}

impl LiveHandle {
    pub fn new(live: Live) -> Self {
        LiveHandle { live: Arc::new(RwLock::new(Arc::new(live))), shared: Arc::default() }
    }

    pub fn current(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replace the configuration; requests and jobs already under way keep their snapshot.
    pub fn replace(&self, live: Live) {
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(live);
    }
}
