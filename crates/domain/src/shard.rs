//! The broker's shards (docs/broker.md, "Shards"): which shard object a page's socket lives on, and
//! the bookkeeping the relay keeps for shards that did not take a publish.
//!
//! A page is bound to one shard when edge renders it (the shard's head is its `since`), and it
//! names that shard on every reconnect (`/ws?shard=<k>&since=<seq>`), because sequence numbers
//! belong to one shard's log: a `since` from one shard means nothing on another.

/// The most shards the broker can be configured with: the relay keeps who is owed a publish as a
/// 32-bit set ([`Shards`]).
pub const MAX_SHARDS: u32 = 32;

/// The relay's object name (there is one).
pub const RELAY_NAME: &str = "relay";

/// The name of shard `k`'s object.
pub fn object_name(shard: u32) -> String {
    format!("shard-{shard}")
}

/// Reads `shard` from a query string (`shard=<k>`; absent: `None`). Anything else is an error that
/// says why.
pub fn parse_shard(query: Option<&str>) -> Result<Option<u32>, String> {
    let mut shard = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "shard" {
            continue;
        }
        if shard.is_some() {
            return Err("shard given twice".to_owned());
        }
        let parsed = value
            .parse::<u32>()
            .ok()
            .filter(|k| *k < MAX_SHARDS)
            .ok_or_else(|| {
                format!(
                    "shard must be a number below {MAX_SHARDS}, not {:?}",
                    crate::bounded(value)
                )
            })?;
        shard = Some(parsed);
    }
    Ok(shard)
}

/// Where a page's upgrade goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub shard: u32,
    /// Whether the page's `since` (if any) was given out by this shard. When not, the page must
    /// reload: it cannot be told what it missed.
    pub since_holds: bool,
}

/// Places a page that asked for shard `asked` (none: a page rendered without one, which stays on
/// shard 0 for good) when the broker has `shards` of them. A shard that no longer exists (the count
/// was lowered) sends its pages to shard 0, to reload there.
pub fn place(asked: Option<u32>, shards: u32) -> Placement {
    match asked {
        None => Placement {
            shard: 0,
            since_holds: true,
        },
        Some(k) if k < shards.max(1) => Placement {
            shard: k,
            since_holds: true,
        },
        Some(_) => Placement {
            shard: 0,
            since_holds: false,
        },
    }
}

/// The shard a newly rendered page is bound to, from a uniform random number in `[0, 1)`: pages
/// spread evenly, whatever their network.
pub fn pick(random: f64, shards: u32) -> u32 {
    let shards = shards.clamp(1, MAX_SHARDS);
    ((random.clamp(0.0, 1.0) * f64::from(shards)) as u32).min(shards - 1)
}

/// A set of shards (bit `k` is shard `k`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shards(u32);

impl Shards {
    /// Shards `0..count`.
    pub fn all(count: u32) -> Shards {
        match count.min(MAX_SHARDS) {
            MAX_SHARDS => Shards(u32::MAX),
            n => Shards((1u32 << n) - 1),
        }
    }

    pub fn from_bits(bits: i64) -> Shards {
        Shards(bits as u32)
    }

    pub fn bits(self) -> i64 {
        i64::from(self.0)
    }

    pub fn one(shard: u32) -> Shards {
        Shards(1u32.checked_shl(shard).unwrap_or(0))
    }

    pub fn contains(self, shard: u32) -> bool {
        self.0 & Shards::one(shard).0 != 0
    }

    pub fn with(self, other: Shards) -> Shards {
        Shards(self.0 | other.0)
    }

    pub fn without(self, other: Shards) -> Shards {
        Shards(self.0 & !other.0)
    }

    /// The shards in both.
    pub fn within(self, other: Shards) -> Shards {
        Shards(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> u32 {
        self.0.count_ones()
    }

    pub fn iter(self) -> impl Iterator<Item = u32> {
        (0..MAX_SHARDS).filter(move |k| self.contains(*k))
    }
}

/// How long the relay waits before it tries again a shard that failed `failures` times in a row:
/// one second, doubling, at most a minute.
pub fn retry_delay_ms(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(6);
    (1_000i64 << doublings).min(60_000)
}

/// Publishes the relay keeps for shards that did not take them, at most. Past it the oldest is
/// dropped, and the shards it was kept for are sent a `reload` first (their pages missed it).
pub const MAX_KEPT: usize = 1_000;

/// The relay's order for publishes it received: unix microseconds, or one more than the last
/// given when that is later. Given out before any wait, it is the order every shard is sent
/// publishes in; a new instance (after an eviction) starts above what an old one gave out unless
/// that one gave out more than a thousand a millisecond.
pub fn next_order(last: u64, now_ms: i64) -> u64 {
    crate::wire::epoch_base(now_ms).max(last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_in_the_query() {
        assert_eq!(parse_shard(None), Ok(None));
        assert_eq!(parse_shard(Some("since=5")), Ok(None));
        assert_eq!(parse_shard(Some("since=5&shard=3")), Ok(Some(3)));
        for bad in [
            "shard=",
            "shard=x",
            "shard=-1",
            "shard=32",
            "shard=1&shard=1",
        ] {
            let error = parse_shard(Some(bad)).expect_err(bad);
            assert!(error.contains("shard"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_page_stays_on_its_shard_while_it_exists() {
        assert_eq!(
            place(None, 4),
            Placement {
                shard: 0,
                since_holds: true
            }
        );
        assert_eq!(
            place(Some(3), 4),
            Placement {
                shard: 3,
                since_holds: true
            }
        );
        // The count was lowered: shard 3 is gone, and its pages' numbers mean nothing elsewhere.
        assert_eq!(
            place(Some(3), 2),
            Placement {
                shard: 0,
                since_holds: false
            }
        );
        assert_eq!(
            place(Some(0), 0),
            Placement {
                shard: 0,
                since_holds: true
            }
        );
    }

    #[test]
    fn picks_spread_over_every_shard() {
        let mut seen = [0u32; 5];
        for i in 0..1_000 {
            seen[pick(f64::from(i) / 1_000.0, 5) as usize] += 1;
        }
        assert_eq!(seen, [200; 5]);
        assert_eq!(pick(1.0, 5), 4);
        assert_eq!(pick(f64::NAN, 5), 0);
        assert_eq!(pick(0.5, 0), 0);
    }

    #[test]
    fn sets_of_shards() {
        assert_eq!(Shards::all(3).iter().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(Shards::all(32).len(), 32);
        let owed = Shards::all(4).without(Shards::one(1));
        assert!(!owed.contains(1) && owed.contains(3));
        assert_eq!(Shards::from_bits(owed.bits()), owed);
        assert_eq!(owed.with(Shards::one(1)), Shards::all(4));
        assert_eq!(Shards::all(8).within(Shards::all(3)), Shards::all(3));
        assert!(Shards::one(40).is_empty());
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let delays: Vec<i64> = (1..=9).map(retry_delay_ms).collect();
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(retry_delay_ms(0), 1_000);
    }

    #[test]
    fn order_grows_across_instances() {
        assert_eq!(next_order(0, 5), 5_000);
        assert_eq!(next_order(5_000, 5), 5_001);
        assert_eq!(next_order(9_999, 6), 10_000);
    }
}
