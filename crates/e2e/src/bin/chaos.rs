//! `chaos`: a crash campaign (`e2e::chaos`; docs/reliability.md). `cargo xtask chaos [--events N]
//! [--rounds R] [--seed S]` runs it: by default 100,000 generated events and 10 crashes at
//! points chosen by a seed from the clock (printed, so a failing run can be repeated exactly).
//! Prints the campaign's row of docs/reliability.md's table; exits 1 if D1 differs from the
//! oracle.

use anyhow::{bail, Result};
use e2e::chaos::{self, Campaign};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut campaign = Campaign {
        name: "chaos".into(),
        events: 100_000,
        rounds: 10,
        seed: e2e::now_ms() as u64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--events" => campaign.events = e2e::number_after(&mut args, &arg)? as usize,
            "--rounds" => campaign.rounds = e2e::number_after(&mut args, &arg)? as usize,
            "--seed" => campaign.seed = e2e::number_after(&mut args, &arg)?,
            "-h" | "--help" => {
                println!(
                    "chaos: a crash campaign against a local stack (docs/reliability.md).\n\n\
                     Options: --events N (100000), --rounds R (10), --seed S (from the clock).\n\
                     `cargo xtask chaos` runs it."
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    let report = chaos::run(&campaign).await?;
    println!(
        "| seed | events | crashes | frames served | lost | duplicated | differing | recovery median / worst | took |\n\
         |---|---|---|---|---|---|---|---|---|\n{}",
        report.row()
    );
    if !report.exact() {
        bail!("seed {}: D1 differs from the oracle", campaign.seed);
    }
    Ok(())
}
