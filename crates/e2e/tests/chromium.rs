//! The home page in a real browser (Debian's Chromium through playwright-core) on the whole local
//! app as production runs it: the local PLC + PDS, the sidecar bridging the PDS's firehose, a
//! `wrangler dev` stack whose listener reads it live and whose edge is the confidential OAuth
//! client served over HTTPS at `statusphere.internal` (every write refreshes its tokens first, so
//! refreshes and the revoke at sign-out pass through it too), and `chromium/home.mjs` playing the
//! people (sign-in on the PDS's own pages, live updates in place, records from other apps,
//! hostile strings, statuses that try to spoof the layout, keyboard, JavaScript off, a phone,
//! contrast, sign-out). Afterwards the statuses they set are checked in their repos on the PDS.

use std::process::Command;

use anyhow::{ensure, Result};
use e2e::pds;
use e2e::shared::app_tls;
use e2e::web::{did_of, start_live_with, SignIn};
use xtask::devnet::DEMO_PASSWORD;
use xtask::toolchain::{self, Tools};
use xtask::workers::Worker;
use xtask::{paths, process};

#[test]
fn a_person_uses_the_page_in_chromium() -> Result<()> {
    let chromium = toolchain::ensure_chromium()?;
    let app = app_tls()?;
    let key = oauth::Key::generate()?.with_kid("chromium");
    let keys = key.to_jwk();
    let net = start_live_with("chromium", SignIn::Confidential { keys: &keys }, |config| {
        config.with_var(Worker::Edge, "REFRESH_MARGIN_SECONDS", "1000000000")
    })?;
    let tools = Tools::locate()?;
    let shots = paths::scratch().join("runs").join("chromium-shots");
    let mut cmd = Command::new(&tools.node);
    cmd.current_dir(paths::root())
        .arg("crates/e2e/chromium/home.mjs")
        .env("BASE_URL", net.stack.base_url())
        .env("PDS_URL", &net.devnet.pds_url)
        .env("PASSWORD", DEMO_PASSWORD)
        .env("CHROMIUM", &chromium)
        .env("APP_SPKI", &app.leaf.spki_sha256)
        .env("SHOTS", &shots);
    net.with_log(process::run(&mut cmd))?;

    let runtime = tokio::runtime::Runtime::new()?;
    let alice = runtime.block_on(pds::repo_statuses(
        &net.devnet.pds_url,
        &did_of(&net.devnet, "alice"),
    ))?;
    ensure!(
        alice.len() == 1 && alice.contains(&"💙".to_owned()),
        "alice's repo holds the status she did not clear: {alice:?}"
    );
    let bob = runtime.block_on(pds::repo_statuses(
        &net.devnet.pds_url,
        &did_of(&net.devnet, "bob"),
    ))?;
    ensure!(
        bob.len() == 6
            && bob.contains(&"😉".to_owned())
            && bob.contains(&"🌈".to_owned())
            && bob.contains(&"<".to_owned())
            && bob.contains(&"\u{202E}".to_owned()),
        "bob's repo: {bob:?}"
    );
    Ok(())
}
