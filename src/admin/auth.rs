//! Admin authentication: the bearer token compared by digest, failures logged and limited per client address.
//!
//! Only failed attempts are charged to an address's quota (`admin.auth_failure_limit`); once it is used
//! up, the address is answered 429 without its token being looked at until the quota has room again, so
//! a guesser cannot keep trying at full speed while a dashboard that holds the right token is never slowed.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::RateLimit;
use crate::guard::UnverifiedLimiter;

/// Why a request was not let in; logged, never shown beyond the 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    MissingHeader,
    NotBearer,
    WrongToken,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Failure::MissingHeader => "no authorization header",
            Failure::NotBearer => "not a bearer token",
            Failure::WrongToken => "wrong token",
        }
    }
}

/// Check an `Authorization` header value against the admin token. The scheme is case-insensitive
/// (RFC 9110 §11.1); both tokens are hashed first, so the comparison takes the same time whatever the
/// presented token's length or content.
pub fn check(header: Option<&[u8]>, expected: &[u8]) -> Result<(), Failure> {
    let value = header.ok_or(Failure::MissingHeader)?;
    let value = std::str::from_utf8(value).map_err(|_| Failure::NotBearer)?.trim();
    let (scheme, token) = value.split_once([' ', '\t']).ok_or(Failure::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Failure::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(Failure::WrongToken);
    }
    let presented = Sha256::digest(token.as_bytes());
    let expected = Sha256::digest(expected);
    if bool::from(presented.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(Failure::WrongToken)
    }
}

/// Failed authentications per client address (the edge's limiter for failed verifications, with the
/// admin quota); one per application, shared by its admin routes.
#[derive(Default)]
pub struct Guard {
    /// The quota the limiter was built for: a reload that changes it starts afresh.
    current: Mutex<Option<(Quota, Arc<UnverifiedLimiter>)>>,
}

/// (count, per) of the rate a limiter was built for.
type Quota = (u32, Duration);

impl Guard {
    pub fn new() -> Arc<Self> {
        Arc::new(Guard::default())
    }

    fn limiter(&self, rate: &RateLimit) -> Arc<UnverifiedLimiter> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((quota, limiter)) if *quota == (rate.count, rate.per) => limiter.clone(),
            _ => {
                let limiter = Arc::new(UnverifiedLimiter::new(rate));
                *current = Some(((rate.count, rate.per), limiter.clone()));
                limiter
            }
        }
    }

    /// Some(wait) while `client` must not try again.
    pub fn blocked(&self, client: IpAddr, rate: &RateLimit) -> Option<Duration> {
        self.limiter(rate).blocked_for(client).filter(|d| !d.is_zero())
    }

    /// Charge one failure to `client`. Some(wait) when that used up its quota.
    pub fn charge(&self, client: IpAddr, rate: &RateLimit) -> Option<Duration> {
        self.limiter(rate).failed(client).map(|wait| wait.max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"an-admin-token-of-some-length";

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer an-admin-token-of-some-length", "bearer an-admin-token-of-some-length"] {
            assert_eq!(check(Some(value.as_bytes()), TOKEN), Ok(()), "{value}");
        }
        assert_eq!(check(Some(b"BEARER \t an-admin-token-of-some-length "), TOKEN), Ok(()));
    }

    #[test]
    fn every_other_header_is_refused_with_its_reason() {
        assert_eq!(check(None, TOKEN), Err(Failure::MissingHeader));
        assert_eq!(check(Some(b"Basic YWRtaW46YWRtaW4="), TOKEN), Err(Failure::NotBearer));
        assert_eq!(check(Some(b"an-admin-token-of-some-length"), TOKEN), Err(Failure::NotBearer));
        assert_eq!(check(Some(b"Bearer "), TOKEN), Err(Failure::NotBearer));
        assert_eq!(check(Some(b"Bearer  "), TOKEN), Err(Failure::NotBearer));
        assert_eq!(check(Some(b"Bearer \xff\xfe"), TOKEN), Err(Failure::NotBearer));
        // Prefixes, extensions and other lengths: the digests differ, so the answer does too.
        for wrong in ["an-admin-token", "an-admin-token-of-some-length-and-more", "x", "AN-ADMIN-TOKEN-OF-SOME-LENGTH"]
        {
            assert_eq!(check(Some(format!("Bearer {wrong}").as_bytes()), TOKEN), Err(Failure::WrongToken), "{wrong}");
        }
    }

    #[test]
    fn failures_beyond_the_quota_block_the_address_and_only_it() {
        let guard = Guard::new();
        let rate = RateLimit { count: 3, per: Duration::from_secs(60) };
        let guesser: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(guard.charge(guesser, &rate), None);
            assert_eq!(guard.blocked(guesser, &rate), None);
        }
        let wait = guard.charge(guesser, &rate).expect("the fourth failure is over the quota");
        assert!(wait > Duration::from_secs(15) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(guard.blocked(guesser, &rate).is_some());
        assert_eq!(guard.blocked(other, &rate), None);
        assert_eq!(guard.charge(other, &rate), None);
    }

    #[test]
    fn ipv6_addresses_of_one_64_prefix_share_a_quota() {
        let guard = Guard::new();
        let rate = RateLimit { count: 1, per: Duration::from_secs(60) };
        assert_eq!(guard.charge("2001:db8:1:2::1".parse().unwrap(), &rate), None);
        assert!(guard.charge("2001:db8:1:2:ffff::9".parse().unwrap(), &rate).is_some());
        assert!(guard.blocked("2001:db8:1:2::abcd".parse().unwrap(), &rate).is_some());
        assert_eq!(guard.blocked("2001:db8:1:3::1".parse().unwrap(), &rate), None);
    }
}
