//! Rate limits on the ceremony endpoints, per client address and per
//! account, kept in memory on each instance (no store access).
//!
//! Each limit is a GCRA (generic cell rate algorithm): per key, one
//! instant — the "theoretical arrival time" (TAT) — says when the key's
//! budget will be whole again. A request is admitted when the TAT is at
//! most `burst - 1` intervals ahead of now, and pushes it one interval
//! further. A key whose TAT has passed has its whole budget, so forgetting
//! it changes nothing: that is how old keys are evicted. A cap on tracked
//! keys bounds memory when a spray of addresses or names arrives faster
//! than keys age out.
//!
//! The router puts [`ceremony_guard`] in front of the ceremony routes
//! (before the body is read: per-address limit, header size); the handlers in `login/` check the account a request
//! names ([`Account`]) once they know it, before touching the store.

use crate::audit::{AuditEvent, Outcome};
use crate::error::HttpError;
use crate::server::{App, RequestCtx};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rate: `per_minute` requests a minute on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// The `[limits]` section, typed (see `config/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub enabled: bool,
    pub per_ip: Rate,
    pub per_account: Rate,
    /// Keys tracked per limit (addresses, accounts) before the ones closest
    /// to a whole budget are forgotten.
    pub max_tracked: usize,
    /// How many proxies in front of tapgate append to `X-Forwarded-For`;
    /// 0: the client is the connection's peer.
    pub trusted_proxies: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            enabled: true,
            per_ip: Rate {
                per_minute: 60,
                burst: 20,
            },
            per_account: Rate {
                per_minute: 10,
                burst: 10,
            },
            max_tracked: 100_000,
            trusted_proxies: 0,
        }
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Ip,
    Account,
}

/// A refusal: how long to wait, and whether it is the first refusal of
/// this key since it was last admitted (only those are audited, so that a
/// flood of refused requests is not also a flood of audit lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub scope: Scope,
    pub wait: Duration,
    pub first: bool,
}

impl Refused {
    /// Whole seconds to wait, rounded up (what `Retry-After` says).
    pub fn retry_after(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }

    /// 429 in the house shape, with `Retry-After`.
    pub fn error(&self) -> HttpError {
        let secs = self.retry_after();
        let wait = if secs == 1 {
            "a second".to_owned()
        } else {
            format!("{secs} seconds")
        };
        let message = match self.scope {
            Scope::Ip => {
                format!("Too many sign-in requests from your network. Wait {wait} and try again.")
            }
            Scope::Account => format!(
                "Too many sign-in attempts for this account. Wait {wait} and try again; if they were not yours, tell your administrator."
            ),
        };
        HttpError::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", message)
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// For the audit event's `detail`.
    pub fn detail(&self) -> &'static str {
        match self.scope {
            Scope::Ip => "per-ip",
            Scope::Account => "per-account",
        }
    }
}

/// The account a ceremony request names.
#[derive(Clone, Copy, Debug)]
pub enum Account<'a> {
    /// Sign-in options for an email (normalised by `Email::parse`).
    Email(&'a str),
    /// Registration or recovery: the invite's hash.
    Invite(&'a str),
    /// Adding a key while signed in: the user.
    Subject(&'a str),
}

impl Account<'_> {
    /// A fixed-size key, so that a long name costs no more memory than a
    /// short one (names come from unauthenticated requests).
    fn key(&self) -> [u8; 16] {
        let (kind, value): (&[u8], &[u8]) = match self {
            Account::Email(e) => (b"email", e.as_bytes()),
            Account::Invite(h) => (b"invite", h.as_bytes()),
            Account::Subject(s) => (b"subject", s.as_bytes()),
        };
        let mut input = Vec::with_capacity(kind.len() + 1 + value.len());
        input.extend_from_slice(kind);
        input.push(0);
        input.extend_from_slice(value);
        let digest = crate::crypto::sha256(&input);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }
}

/// Both limits of one instance.
pub struct Limits {
    enabled: bool,
    trusted_proxies: usize,
    ip: Keyed<IpAddr>,
    account: Keyed<[u8; 16]>,
}

impl Limits {
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits {
            enabled: config.enabled,
            trusted_proxies: config.trusted_proxies,
            ip: Keyed::new(config.per_ip, config.max_tracked),
            account: Keyed::new(config.per_account, config.max_tracked),
        }
    }

    /// The client's address: the connection's peer, or — behind
    /// `trusted_proxies` proxies — the entry the outermost trusted proxy
    /// put into `X-Forwarded-For` (counted from the right, so that entries
    /// the client wrote itself are never used). IPv6 addresses count by
    /// their /64, which one host can fill with addresses at will.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        bucket_of(client_addr(headers, peer, self.trusted_proxies))
    }

    /// How many proxies in front append to `X-Forwarded-For`.
    pub fn trusted_proxies(&self) -> usize {
        self.trusted_proxies
    }

    /// Count a request from `ip` (as [`Limits::client_ip`] gave it).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        self.check_ip_at(ip, Instant::now())
    }

    pub fn check_ip_at(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if !self.enabled {
            return Ok(());
        }
        self.ip
            .check(bucket_of(ip), now)
            .map_err(|(wait, first)| Refused {
                scope: Scope::Ip,
                wait,
                first,
            })
    }

    /// Count a request that names `account`.
    pub fn check_account(&self, account: Account<'_>) -> Result<(), Refused> {
        self.check_account_at(account, Instant::now())
    }

    pub fn check_account_at(&self, account: Account<'_>, now: Instant) -> Result<(), Refused> {
        if !self.enabled {
            return Ok(());
        }
        self.account
            .check(account.key(), now)
            .map_err(|(wait, first)| Refused {
                scope: Scope::Account,
                wait,
                first,
            })
    }

    /// Keys tracked now: (addresses, accounts).
    pub fn tracked(&self) -> (usize, usize) {
        (self.ip.len(), self.account.len())
    }
}

/// The `n`-th address from the right of all `X-Forwarded-For` values; `None`
/// when there are fewer, or it is not an address.
/// The client's own address (not bucketed): the connection's peer, or
/// behind `trusted_proxies` proxies the `X-Forwarded-For` entry the
/// outermost trusted one wrote. What audit events record as `ip`.
pub fn client_addr(headers: &HeaderMap, peer: IpAddr, trusted_proxies: usize) -> IpAddr {
    if trusted_proxies == 0 {
        return peer;
    }
    forwarded_for(headers, trusted_proxies).unwrap_or(peer)
}

fn forwarded_for(headers: &HeaderMap, n: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let entry = entries.len().checked_sub(n).map(|i| entries[i])?;
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// IPv4 as is (also when mapped into IPv6); IPv6 by its /64.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One GCRA limit over many keys.
struct Keyed<K> {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of now a TAT may be and still admit: `burst - 1`
    /// intervals.
    tolerance: Duration,
    cap: usize,
    state: Mutex<KeyedState<K>>,
}

struct KeyedState<K> {
    entries: HashMap<K, Entry>,
    last_sweep: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Entry {
    tat: Instant,
    /// Refused since last admitted.
    refused: bool,
}

/// How often keys whose budget is whole again are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl<K: std::hash::Hash + Eq + Copy> Keyed<K> {
    fn new(rate: Rate, cap: usize) -> Keyed<K> {
        let interval = Duration::from_secs(60) / rate.per_minute.max(1);
        Keyed {
            interval,
            tolerance: interval * rate.burst.max(1).saturating_sub(1),
            cap: cap.max(1),
            state: Mutex::new(KeyedState {
                entries: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedState<K>> {
        // A panic while holding the lock cannot leave an entry half
        // written (each is one Copy value), so a poisoned map is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit (and count) a request for `key` at `now`, or say how long to
    /// wait and whether this is the key's first refusal since it was last
    /// admitted.
    fn check(&self, key: K, now: Instant) -> Result<(), (Duration, bool)> {
        let mut state = self.lock();
        if state
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            state.entries.retain(|_, e| e.tat > now);
            state.last_sweep = Some(now);
        }
        if !state.entries.contains_key(&key) && state.entries.len() >= self.cap {
            make_room(&mut state.entries, self.cap, now);
        }
        let previous = state.entries.get(&key).copied();
        let tat = previous.map_or(now, |e| e.tat.max(now));
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.tolerance {
            // Only a key with an entry can be ahead of now.
            let first = previous.is_some_and(|e| !e.refused);
            if let Some(e) = state.entries.get_mut(&key) {
                e.refused = true;
            }
            return Err((ahead - self.tolerance, first));
        }
        state.entries.insert(
            key,
            Entry {
                tat: tat + self.interval,
                refused: false,
            },
        );
        Ok(())
    }
}

/// At the cap: forget keys whose budget is whole (nothing is lost), and if
/// that is not enough, the half closest to a whole budget. A key that spent
/// its burst is furthest from a whole budget, so the keys a limit is for
/// are kept longest.
fn make_room<K: std::hash::Hash + Eq>(entries: &mut HashMap<K, Entry>, cap: usize, now: Instant) {
    entries.retain(|_, e| e.tat > now);
    if entries.len() < cap {
        return;
    }
    let mut tats: Vec<Instant> = entries.values().map(|e| e.tat).collect();
    let mid = tats.len() / 2;
    let (_, cut, _) = tats.select_nth_unstable(mid);
    let cut = *cut;
    entries.retain(|_, e| e.tat > cut);
}

/// The most header bytes (names and values) a ceremony request may carry.
/// Far above what a browser sends; hyper's own limit (about 400 KiB, or
/// 100 fields) answers a bare 431 without a message.
pub const MAX_CEREMONY_HEADERS: usize = 64 * 1024;

/// The API's body limit (`DefaultBodyLimit` in `server.rs`), checked here
/// against a declared `Content-Length` so that an oversized body is refused
/// before any of it is waited for.
const MAX_CEREMONY_BODY: u64 = 64 * 1024;

/// Where the router nests the ceremony routes (the layer sees the path
/// below it).
const API_PREFIX: &str = "/.tapgate/api";

/// Route layer on the ceremony endpoints, before the body is read: count
/// the request against the client's address, then refuse an oversized
/// header block or declared body with a message.
pub async fn ceremony_guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let ip = app.limits.client_ip(req.headers(), peer.ip());
    if let Err(refused) = app.limits.check_ip(ip) {
        let err = refused.error();
        if refused.first {
            let ctx = req
                .extensions()
                .get::<RequestCtx>()
                .cloned()
                .unwrap_or_default();
            let mut ev = AuditEvent::new("rate_limited", Outcome::Failure);
            crate::gate::client_facts(&mut ev, &ctx, req.headers(), peer);
            ev.ip = Some(ip.to_string());
            ev.route = Some(format!("{API_PREFIX}{}", req.uri().path()));
            ev.reason = Some(err.code.to_owned());
            ev.detail = Some(refused.detail().to_owned());
            app.audit.record(ev);
        }
        return err.into_response();
    }
    let size: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if size > MAX_CEREMONY_HEADERS {
        return HttpError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "The request's headers are too large ({} KiB; {} KiB at most), usually because of too many or too large cookies. Clear this site's cookies and try again.",
                size.div_ceil(1024),
                MAX_CEREMONY_HEADERS / 1024
            ),
        )
        .into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_CEREMONY_BODY) {
        return HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "The request body is too large (64 KiB at most).",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: (u32, u32), per_account: (u32, u32), cap: usize) -> Limits {
        Limits::new(&LimitsConfig {
            enabled: true,
            per_ip: Rate {
                per_minute: per_ip.0,
                burst: per_ip.1,
            },
            per_account: Rate {
                per_minute: per_account.0,
                burst: per_account.1,
            },
            max_tracked: cap,
            trusted_proxies: 0,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_is_admitted_then_the_next_request_waits_one_interval() {
        // 60 a minute: one a second, 5 at once.
        let l = limits((60, 5), (10, 10), 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.check_ip_at(ip("192.0.2.1"), t0), Ok(()));
        }
        let refused = l.check_ip_at(ip("192.0.2.1"), t0).unwrap_err();
        assert_eq!(refused.scope, Scope::Ip);
        assert_eq!(refused.wait, Duration::from_secs(1));
        assert_eq!(refused.retry_after(), 1);
        // One interval later, exactly one more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check_ip_at(ip("192.0.2.1"), t1), Ok(()));
        assert!(l.check_ip_at(ip("192.0.2.1"), t1).is_err());
    }

    #[test]
    fn the_sustained_rate_is_the_configured_one() {
        // 30 a minute, burst 1: exactly one every 2 s, over ten minutes.
        let l = limits((30, 1), (10, 10), 100);
        let t0 = Instant::now();
        let mut admitted = 0;
        for tenth in 0..6000u64 {
            let now = t0 + Duration::from_millis(tenth * 100);
            if l.check_ip_at(ip("192.0.2.9"), now).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 300);
    }

    #[test]
    fn refused_requests_do_not_spend_the_budget() {
        let l = limits((60, 2), (10, 10), 100);
        let t0 = Instant::now();
        l.check_ip_at(ip("192.0.2.1"), t0).unwrap();
        l.check_ip_at(ip("192.0.2.1"), t0).unwrap();
        for _ in 0..1000 {
            assert!(l.check_ip_at(ip("192.0.2.1"), t0).is_err());
        }
        // Hammering did not push the wait further out.
        assert_eq!(
            l.check_ip_at(ip("192.0.2.1"), t0).unwrap_err().wait,
            Duration::from_secs(1)
        );
        assert!(
            l.check_ip_at(ip("192.0.2.1"), t0 + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn only_the_first_refusal_of_a_run_is_marked_first() {
        let l = limits((60, 1), (10, 10), 100);
        let t0 = Instant::now();
        l.check_ip_at(ip("192.0.2.1"), t0).unwrap();
        assert!(l.check_ip_at(ip("192.0.2.1"), t0).unwrap_err().first);
        assert!(!l.check_ip_at(ip("192.0.2.1"), t0).unwrap_err().first);
        let t1 = t0 + Duration::from_secs(1);
        l.check_ip_at(ip("192.0.2.1"), t1).unwrap();
        assert!(l.check_ip_at(ip("192.0.2.1"), t1).unwrap_err().first);
    }

    #[test]
    fn addresses_and_accounts_have_their_own_budgets() {
        let l = limits((60, 1), (60, 1), 100);
        let t0 = Instant::now();
        l.check_ip_at(ip("192.0.2.1"), t0).unwrap();
        l.check_ip_at(ip("192.0.2.2"), t0).unwrap();
        assert!(l.check_ip_at(ip("192.0.2.1"), t0).is_err());
        l.check_account_at(Account::Email("ann@example.com"), t0)
            .unwrap();
        l.check_account_at(Account::Email("bob@example.com"), t0)
            .unwrap();
        // The same text as another kind of name is another account.
        l.check_account_at(Account::Invite("ann@example.com"), t0)
            .unwrap();
        let r = l
            .check_account_at(Account::Email("ann@example.com"), t0)
            .unwrap_err();
        assert_eq!(r.scope, Scope::Account);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let l = limits((60, 1), (10, 10), 100);
        let t0 = Instant::now();
        l.check_ip_at(ip("2001:db8:1:2::1"), t0).unwrap();
        assert!(
            l.check_ip_at(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0)
                .is_err()
        );
        l.check_ip_at(ip("2001:db8:1:3::1"), t0).unwrap();
        l.check_ip_at(ip("192.0.2.7"), t0).unwrap();
        assert!(l.check_ip_at(ip("::ffff:192.0.2.7"), t0).is_err());
    }

    #[test]
    fn keys_whose_budget_is_whole_again_are_swept_out() {
        let l = limits((60, 1), (10, 10), 1000);
        let t0 = Instant::now();
        for i in 0..200u32 {
            l.check_ip_at(IpAddr::from(i.to_be_bytes()), t0).unwrap();
        }
        assert_eq!(l.tracked().0, 200);
        // A minute later every budget is whole: the next request sweeps.
        l.check_ip_at(ip("192.0.2.1"), t0 + SWEEP_EVERY).unwrap();
        assert_eq!(l.tracked().0, 1);
    }

    #[test]
    fn a_spray_of_addresses_never_tracks_more_than_the_cap() {
        let cap = 1000;
        let l = limits((1, 5), (10, 10), cap);
        let t0 = Instant::now();
        // One offender spends its burst, then 100 000 fresh addresses
        // arrive within a second (none of whose budgets is whole again).
        for _ in 0..5 {
            l.check_ip_at(ip("198.51.100.1"), t0).unwrap();
        }
        let mut most = 0;
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) * 10);
            l.check_ip_at(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), now)
                .unwrap();
            most = most.max(l.tracked().0);
            if i % 97 == 0 {
                // The offender keeps trying: still refused, whatever the spray.
                assert!(l.check_ip_at(ip("198.51.100.1"), now).is_err(), "{i}");
            }
        }
        assert!(most <= cap, "tracked {most} > {cap}");
    }

    #[test]
    fn turned_off_admits_everything_and_tracks_nothing() {
        let l = Limits::new(&LimitsConfig {
            enabled: false,
            ..LimitsConfig::default()
        });
        let t0 = Instant::now();
        for _ in 0..10_000 {
            l.check_ip_at(ip("192.0.2.1"), t0).unwrap();
            l.check_account_at(Account::Email("a@example.com"), t0)
                .unwrap();
        }
        assert_eq!(l.tracked(), (0, 0));
    }

    #[test]
    fn the_client_is_the_peer_unless_proxies_are_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.66, 198.51.100.7"),
        );
        let peer = ip("10.0.0.1");
        let l = Limits::new(&LimitsConfig::default());
        assert_eq!(l.client_ip(&headers, peer), peer);
        let one = Limits::new(&LimitsConfig {
            trusted_proxies: 1,
            ..LimitsConfig::default()
        });
        // The entry the trusted proxy appended, not the one the client wrote.
        assert_eq!(one.client_ip(&headers, peer), ip("198.51.100.7"));
        let two = Limits::new(&LimitsConfig {
            trusted_proxies: 2,
            ..LimitsConfig::default()
        });
        assert_eq!(two.client_ip(&headers, peer), ip("203.0.113.66"));
        // Fewer entries than proxies, or garbage: the peer.
        let three = Limits::new(&LimitsConfig {
            trusted_proxies: 3,
            ..LimitsConfig::default()
        });
        assert_eq!(three.client_ip(&headers, peer), peer);
        headers.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(one.client_ip(&headers, peer), peer);
        // Several header lines are one list, in order.
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.9:4711"),
        );
        assert_eq!(one.client_ip(&headers, peer), ip("198.51.100.9"));
    }

    #[test]
    fn a_refusal_is_a_429_with_retry_after_in_whole_seconds() {
        let r = Refused {
            scope: Scope::Account,
            wait: Duration::from_millis(5_200),
            first: true,
        };
        let e = r.error();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "rate-limited");
        assert!(e.message.contains("6 seconds"), "{}", e.message);
        let retry = e
            .headers
            .iter()
            .find(|(k, _)| k == header::RETRY_AFTER)
            .map(|(_, v)| v.to_str().unwrap().to_owned());
        assert_eq!(retry.as_deref(), Some("6"));
    }
}
