//! Login throttling. Failed logins are counted per client address and per
//! user name; past a few, each further failure locks that address or name
//! out for twice as long as the last (up to a cap), and a locked login is
//! refused before its password is even hashed. A success clears the user
//! name's count (not the address's: one valid account must not let a
//! client reset its own count while it guesses another's password).
//!
//! Password hashing (argon2, memory-hard) runs through a [`HashGate`]: a
//! few at a time, a few more waiting, the rest refused at once, so a flood
//! of logins cannot exhaust the host's memory or CPUs.
//!
//! Time is a parameter (`now`), so the tests advance it instead of sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How failures of one key (an address, a user name) are limited.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed before the first lock.
    pub free_failures: u32,
    /// The first lock; each failure after it doubles the lock.
    pub first_lock: Duration,
    pub max_lock: Duration,
    /// A key with no failure for this long starts again from zero.
    pub forget_after: Duration,
    /// Keys remembered at most (the oldest are forgotten first).
    pub max_keys: usize,
}

/// Per user name: 5 failures, then 30 s, 1 min, 2 min... up to 15 min.
pub const PER_USER: Policy = Policy {
    free_failures: 5,
    first_lock: Duration::from_secs(30),
    max_lock: Duration::from_secs(15 * 60),
    forget_after: Duration::from_secs(3600),
    max_keys: 10_000,
};

/// Per client address (an IPv6 client's /64): more room, since several
/// people may share an address.
pub const PER_ADDRESS: Policy = Policy {
    free_failures: 20,
    ..PER_USER
};

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failures per key under one policy.
#[derive(Debug)]
struct Counter<K> {
    policy: Policy,
    keys: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new(policy: Policy) -> Self {
        Counter {
            policy,
            keys: HashMap::new(),
        }
    }

    fn live(&self, key: &K, now: Instant) -> Option<&Failures> {
        self.keys
            .get(key)
            .filter(|f| now.saturating_duration_since(f.last) < self.policy.forget_after)
    }

    /// How long `key` is still locked, if it is.
    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.live(key, now)?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn fail(&mut self, key: K, now: Instant) {
        let count = self.live(&key, now).map_or(0, |f| f.count) + 1;
        if !self.keys.contains_key(&key) && self.keys.len() >= self.policy.max_keys {
            self.make_room(now);
        }
        let locked_until = (count >= self.policy.free_failures).then(|| {
            let doublings = (count - self.policy.free_failures).min(16);
            now + self
                .policy
                .first_lock
                .saturating_mul(1 << doublings)
                .min(self.policy.max_lock)
        });
        self.keys.insert(
            key,
            Failures {
                count,
                last: now,
                locked_until,
            },
        );
    }

    fn clear(&mut self, key: &K) {
        self.keys.remove(key);
    }

    /// Forgets stale keys, or else the one that failed longest ago.
    fn make_room(&mut self, now: Instant) {
        let forget_after = self.policy.forget_after;
        self.keys
            .retain(|_, f| now.saturating_duration_since(f.last) < forget_after);
        if self.keys.len() >= self.policy.max_keys
            && let Some(oldest) = self
                .keys
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
        {
            self.keys.remove(&oldest);
        }
    }
}

/// The key of a client address: an IPv4 address, or an IPv6 address's /64
/// (one host usually has a whole /64 to pick addresses from).
fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Failed logins per client address and per user name.
#[derive(Debug)]
pub struct LoginLimiter {
    by_address: Counter<IpAddr>,
    by_user: Counter<String>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new(PER_ADDRESS, PER_USER)
    }
}

impl LoginLimiter {
    pub fn new(per_address: Policy, per_user: Policy) -> Self {
        LoginLimiter {
            by_address: Counter::new(per_address),
            by_user: Counter::new(per_user),
        }
    }

    /// `Err(wait)` while the address or the user name is locked out.
    pub fn check(&self, addr: Option<IpAddr>, user: &str, now: Instant) -> Result<(), Duration> {
        let by_address = addr.and_then(|a| self.by_address.locked_for(&address_key(a), now));
        let by_user = self.by_user.locked_for(&user.to_owned(), now);
        match by_address.max(by_user) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn failed(&mut self, addr: Option<IpAddr>, user: &str, now: Instant) {
        if let Some(a) = addr {
            self.by_address.fail(address_key(a), now);
        }
        self.by_user.fail(user.to_owned(), now);
    }

    pub fn succeeded(&mut self, user: &str) {
        self.by_user.clear(&user.to_owned());
    }
}

/// Password hashes running at once.
pub const HASHES_RUNNING: usize = 2;
/// Logins waiting for a hash slot; more are refused.
pub const HASHES_WAITING: usize = 8;

/// Bounds the argon2 work of logins: `running` at once, `waiting` more
/// queued, the rest refused.
#[derive(Debug)]
pub struct HashGate {
    running: Semaphore,
    capacity: usize,
    admitted: AtomicUsize,
}

impl Default for HashGate {
    fn default() -> Self {
        Self::new(HASHES_RUNNING, HASHES_WAITING)
    }
}

/// A place in the [`HashGate`]: running or queued; given back when dropped.
#[derive(Debug)]
pub struct Admission<'a> {
    gate: &'a HashGate,
}

impl HashGate {
    pub fn new(running: usize, waiting: usize) -> Self {
        HashGate {
            running: Semaphore::new(running),
            capacity: running + waiting,
            admitted: AtomicUsize::new(0),
        }
    }

    /// A place, or `None` when every slot and queue place is taken.
    pub fn admit(&self) -> Option<Admission<'_>> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| Admission { gate: self })
    }
}

impl Admission<'_> {
    /// Runs `hash` (blocking work) once a slot is free.
    pub async fn run<T: Send + 'static>(self, hash: impl FnOnce() -> T + Send + 'static) -> T {
        let _slot = self
            .gate
            .running
            .acquire()
            .await
            .expect("the gate's semaphore is never closed");
        tokio::task::spawn_blocking(hash)
            .await
            .expect("password hashing does not panic")
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.gate.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

    fn fail_n(l: &mut LoginLimiter, addr: Option<IpAddr>, user: &str, n: u32, now: Instant) {
        for _ in 0..n {
            assert!(l.check(addr, user, now).is_ok());
            l.failed(addr, user, now);
        }
    }

    #[test]
    fn a_user_is_locked_after_five_failures_until_the_lock_passes() {
        let mut l = LoginLimiter::default();
        let t0 = Instant::now();
        fail_n(&mut l, ADDR, "admin", 4, t0);
        assert!(l.check(ADDR, "admin", t0).is_ok());
        l.failed(ADDR, "admin", t0);
        assert_eq!(l.check(ADDR, "admin", t0), Err(Duration::from_secs(30)));
        // Another address is refused too: the user name is locked.
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)));
        assert!(l.check(other, "admin", t0).is_err());
        assert!(l.check(ADDR, "viewer", t0).is_ok());
        let t1 = t0 + Duration::from_secs(30);
        assert!(l.check(ADDR, "admin", t1).is_ok());
        // The next failure locks twice as long.
        l.failed(ADDR, "admin", t1);
        assert_eq!(l.check(ADDR, "admin", t1), Err(Duration::from_secs(60)));
    }

    #[test]
    fn locks_double_up_to_the_cap() {
        let mut l = LoginLimiter::default();
        let mut t = Instant::now();
        fail_n(&mut l, None, "admin", 4, t);
        let mut locks = Vec::new();
        for _ in 0..8 {
            l.failed(None, "admin", t);
            let wait = l.check(None, "admin", t).unwrap_err();
            locks.push(wait.as_secs());
            t += wait;
        }
        assert_eq!(locks, [30, 60, 120, 240, 480, 900, 900, 900]);
    }

    #[test]
    fn a_success_clears_the_user_but_not_the_address() {
        let mut l = LoginLimiter::default();
        let t = Instant::now();
        fail_n(&mut l, ADDR, "admin", 4, t);
        l.succeeded("admin");
        fail_n(&mut l, ADDR, "admin", 4, t);
        assert!(l.check(ADDR, "admin", t).is_ok());
        // 8 failures so far from ADDR; 20 lock the address for every user.
        for i in 0..12 {
            l.failed(ADDR, &format!("user{i}"), t);
        }
        assert!(l.check(ADDR, "someone-else", t).is_err());
        assert!(l.check(None, "someone-else", t).is_ok());
    }

    #[test]
    fn failures_are_forgotten_after_an_hour_without_one() {
        let mut l = LoginLimiter::default();
        let t = Instant::now();
        fail_n(&mut l, None, "admin", 4, t);
        let later = t + Duration::from_secs(3600);
        l.failed(None, "admin", later);
        assert!(l.check(None, "admin", later).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), ADDR.unwrap());
    }

    #[test]
    fn the_number_of_remembered_keys_is_bounded() {
        let policy = Policy {
            max_keys: 3,
            ..PER_USER
        };
        let mut l = LoginLimiter::new(policy, policy);
        let t = Instant::now();
        for i in 0..10u64 {
            l.failed(None, &format!("u{i}"), t + Duration::from_secs(i));
        }
        assert_eq!(l.by_user.keys.len(), 3);
        assert!(l.by_user.keys.contains_key("u9"));
        assert!(!l.by_user.keys.contains_key("u0"));
    }

    #[test]
    fn the_hash_gate_refuses_beyond_its_queue() {
        let gate = HashGate::new(2, 1);
        let held: Vec<_> = (0..3).map(|_| gate.admit().unwrap()).collect();
        assert!(gate.admit().is_none());
        drop(held);
        assert!(gate.admit().is_some());
    }

    #[tokio::test]
    async fn admitted_hashes_run() {
        let gate = HashGate::new(1, 0);
        let a = gate.admit().unwrap();
        assert!(gate.admit().is_none());
        assert_eq!(a.run(|| 6 * 7).await, 42);
        assert!(gate.admit().is_some());
    }
}
