//! guard: what one client, or all of them together, may hold before it is trusted — connections per
//! address, request bytes in memory, and failed verifications (or admin logins) per address.
//!
//! Each limit protects the signed senders from the rest: junk from one address cannot fill the
//! connection table, the memory, or a source's rate limit that the real sender needs. The webhook edge
//! and the admin API both apply these, so they live beside both rather than inside either.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::DefaultKeyedRateLimiter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{RateLimit, Server};

/// The peer of the connection a request arrived on, set by the accept loop (only logged with
/// `log_client_ip = true`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A client as the limits count it: an IPv4 address, or an IPv6 /64 (one subscriber's whole prefix, which
/// a single host can draw addresses from at will).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    ClientKey(IpAddr::V6(bits.into()))
                }
            },
        }
    }
}

/// Open connections per client; a connection holds a [`ConnectionSlot`] for as long as it is open.
#[derive(Debug)]
pub struct ConnectionsPerClient {
    limit: usize,
    open: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

/// One open connection of a client; dropping it frees the place.
#[derive(Debug)]
pub struct ConnectionSlot {
    key: ClientKey,
    open: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

impl ConnectionsPerClient {
    pub fn new(limit: usize) -> Self {
        ConnectionsPerClient { limit, open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, or None when that client already has `limit` open.
    pub fn open(&self, ip: IpAddr) -> Option<ConnectionSlot> {
        let key = ClientKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { key, open: self.open.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The bytes of request bodies held in memory by all requests together.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

/// Bytes a request holds from the budget; returned when the request is answered.
#[derive(Debug)]
pub struct BodyBytes {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        BodyBudget { bytes: Arc::new(Semaphore::new(total.min(Semaphore::MAX_PERMITS))) }
    }

    /// Nothing held yet.
    pub fn start(&self) -> BodyBytes {
        BodyBytes { budget: self.bytes.clone(), held: None }
    }
}

impl BodyBytes {
    /// Hold `n` more bytes; false (holding nothing more) when the budget does not have them now. Nobody
    /// waits: a full budget means a flood, and the sender is told to come back (503 + Retry-After).
    pub fn grow(&mut self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(n) else {
            return false;
        };
        match self.budget.clone().try_acquire_many_owned(n) {
            Ok(more) => {
                match &mut self.held {
                    Some(held) => held.merge(more),
                    None => self.held = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }

    pub fn held(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.num_permits())
    }
}

/// Failed verifications per client address. Verified requests are never counted here, so junk from
/// other addresses cannot use up what a real sender needs.
pub struct UnverifiedLimiter {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    /// Clients that used up their failures, until when: checked before a body is read, so a flood is
    /// refused cheaply. governor has no look-without-taking, hence this small table beside it.
    blocked: Mutex<HashMap<ClientKey, Instant>>,
    /// Clients remembered at which the next sweep runs: twice what the last sweep kept, so sweeping stays
    /// amortised O(1) per failure however many addresses an attacker uses.
    sweep_at: AtomicUsize,
}

/// The table is never swept below this many clients.
const SWEEP_FROM: usize = 4096;

impl std::fmt::Debug for UnverifiedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnverifiedLimiter").field("clients", &self.limiter.len()).finish()
    }
}

impl UnverifiedLimiter {
    pub fn new(rate: &RateLimit) -> Self {
        UnverifiedLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(crate::live::quota(rate)),
            blocked: Mutex::default(),
            sweep_at: AtomicUsize::new(SWEEP_FROM),
        }
    }

    /// How long `ip` must wait, if it used up its failed verifications.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&ClientKey::of(ip))?;
        until.checked_duration_since(Instant::now())
    }

    /// Charge one failed verification to `ip`. Past its allowance the client is blocked until a cell
    /// frees up, and the wait is returned (this request is then answered 429 as well).
    pub fn failed(&self, ip: IpAddr) -> Option<Duration> {
        if self.limiter.len() >= self.sweep_at.load(Ordering::Relaxed) {
            self.forget_idle();
            self.sweep_at.store((self.limiter.len() * 2).max(SWEEP_FROM), Ordering::Relaxed);
        }
        let key = ClientKey::of(ip);
        let not_until = self.limiter.check_key(&key).err()?;
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        self.blocked.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Instant::now() + wait);
        Some(wait)
    }

    /// Forget clients that are back at their full allowance, so the tables only hold recent offenders.
    fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let now = Instant::now();
        self.blocked.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, until| *until > now);
    }
}

/// The edge's limits that hold across reloads, built once from `[server]`.
#[derive(Debug)]
pub struct EdgeGuards {
    pub body_budget: BodyBudget,
    pub unverified: UnverifiedLimiter,
}

impl EdgeGuards {
    pub fn new(server: &Server) -> Self {
        EdgeGuards {
            body_budget: BodyBudget::new(server.max_buffered),
            unverified: UnverifiedLimiter::new(&server.unverified_rate_limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_from_ever_new_addresses_do_not_grow_the_table_without_end() {
        let limiter = UnverifiedLimiter::new(&RateLimit { count: 1000, per: Duration::from_secs(1) });
        for round in 0u32..20 {
            for i in 0u32..1000 {
                limiter.failed(IpAddr::V4((round * 1000 + i).into()));
            }
            // Back at full allowance after a millisecond: the next sweep may forget them.
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(limiter.limiter.len() < 2 * SWEEP_FROM, "{} clients remembered", limiter.limiter.len());
    }

    #[test]
    fn an_ipv6_prefix_is_one_client_and_a_mapped_ipv4_is_its_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(ClientKey::of(a), ClientKey::of(b));
        assert_ne!(ClientKey::of(a), ClientKey::of("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(ClientKey::of("::ffff:10.0.0.1".parse().unwrap()), ClientKey::of("10.0.0.1".parse().unwrap()));
    }
}
