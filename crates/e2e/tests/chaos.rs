//! The crash campaign's short run (`e2e::chaos`; the long one is `cargo xtask chaos`,
//! docs/reliability.md): a replay of 6,000 generated events with every hostile fixture mixed in,
//! the stack killed with SIGKILL twice and the sidecar once, at points a seed chooses; D1 ends
//! equal to the oracle. `CHAOS_SEED` picks the seed (default: a fixed one, so that the suite
//! is repeatable); a seed that ever fails is added to `SEEDS`.

use e2e::chaos::{self, Campaign};

/// Seeds the suite runs: the default, and any that once found a fault.
const SEEDS: [u64; 1] = [20_261_204];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_random_points_lose_and_duplicate_nothing() {
    let seeds: Vec<u64> = match std::env::var("CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("CHAOS_SEED is a number")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        let campaign = Campaign {
            name: format!("chaos-short-{seed}"),
            events: 6_000,
            rounds: 3,
            seed,
        };
        let report = chaos::run(&campaign).await.expect("the campaign runs");
        eprintln!("{}", report.row());
        assert!(
            report.exact(),
            "seed {seed}: lost {}, duplicated {}, differing {}",
            report.lost,
            report.duplicated,
            report.differing
        );
        assert!(
            !report.crashes.is_empty(),
            "seed {seed}: the replay ended before any crash"
        );
    }
}
