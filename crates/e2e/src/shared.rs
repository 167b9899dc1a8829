//! Fixtures a whole test binary shares: started by the first test that asks for one, ended when
//! the binary exits (by a watchdog on its process group, `Group::end_with_this_process` in
//! crates/xtask/src/process.rs, since a `static` is never dropped).
//!
//! One local atproto network serves every test that only signs people in and writes to their
//! repos. Each such test has people of its own ([`PEOPLE`]), so that no test sees another's
//! statuses, sessions or grants. Tests that end their network (a PDS that goes down) or read its
//! whole firehose (live mode, Chromium) start their own.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use xtask::devnet::{Devnet, DevnetConfig};
use xtask::toolchain::Tools;

/// The accounts of the shared network (`alice` is `alice.test`), by the test that signs in as
/// them: edge's flow (alice), its refusals (dave, erin), session expiry (frank), refreshes
/// (ivan), the hostile network (grace, heidi), and the OAuth client's two tests (judy, ken;
/// liam, mia).
pub const PEOPLE: [&str; 11] = [
    "alice", "dave", "erin", "frank", "ivan", "grace", "heidi", "judy", "ken", "liam", "mia",
];

/// The shared local atproto network, started on first use. A failed start is not kept: the next
/// test to ask tries again (and says why it failed, too).
pub fn devnet() -> Result<Arc<Devnet>> {
    static DEVNET: Mutex<Option<Arc<Devnet>>> = Mutex::new(None);
    let mut slot = DEVNET
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(devnet) = slot.as_ref() {
        return Ok(devnet.clone());
    }
    let tools = Tools::ensure()?;
    let mut config = DevnetConfig::for_test("shared")?;
    config.accounts = PEOPLE.map(str::to_owned).to_vec();
    let mut devnet = Devnet::start(&tools, &config)?;
    devnet.end_with_this_process()?;
    let devnet = Arc::new(devnet);
    *slot = Some(devnet.clone());
    Ok(devnet)
}
