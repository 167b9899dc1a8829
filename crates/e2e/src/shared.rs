//! Fixtures a whole test binary shares: started by the first test that asks for one, ended when
//! the binary exits (by a watchdog on its process group, `Group::end_with_this_process` in
//! crates/xtask/src/process.rs, since a `static` is never dropped).
//!
//! One local atproto network serves every test that only signs people in and writes to their
//! repos. Each such test has people of its own ([`PEOPLE`]), so that no test sees another's
//! statuses, sessions or grants. Tests that end their network (a PDS that goes down) or read its
//! whole firehose (live mode, Chromium) start their own.
//!
//! Every network trusts the run's certificate authority for [`APP_HOST`] and resolves that name
//! to 127.0.0.1 ([`app_tls`], [`https_app`]), so that a stack serving the confidential OAuth
//! client over HTTPS there is reached as a deployed app is.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use xtask::devnet::{Devnet, DevnetConfig, HttpsApp};
use xtask::toolchain::Tools;

use crate::tls::{Leaf, TestCa};

/// The name test stacks serve the confidential client at. `.internal` is reserved for private
/// use (never delegated), and the reference authorization server refuses client ids under
/// `.test`, `.local`, `.localhost`, `.example` and `.invalid` (docs/auth.md).
pub const APP_HOST: &str = "statusphere.internal";

/// The run's certificate authority (for [`APP_HOST`] only, its certificate in `ca_file`) and
/// the certificate every HTTPS front serves.
pub struct AppTls {
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub leaf: Leaf,
}

/// The run's [`AppTls`], made on first use.
pub fn app_tls() -> Result<Arc<AppTls>> {
    static TLS: Mutex<Option<Arc<AppTls>>> = Mutex::new(None);
    let mut slot = TLS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tls) = slot.as_ref() {
        return Ok(tls.clone());
    }
    let dir = xtask::paths::scratch()
        .join("runs")
        .join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = TestCa::new(&[APP_HOST])?;
    let ca_file = ca.write_cert(&dir)?;
    let leaf = ca.leaf(&[APP_HOST])?;
    let tls = Arc::new(AppTls { ca, ca_file, leaf });
    *slot = Some(tls.clone());
    Ok(tls)
}

/// What a network needs to reach an HTTPS stack at [`APP_HOST`].
pub fn https_app() -> Result<HttpsApp> {
    Ok(HttpsApp {
        ca_file: app_tls()?.ca_file.clone(),
        hosts: vec![APP_HOST.to_owned()],
    })
}

/// The accounts of the shared network (`alice` is `alice.test`), by the test that signs in as
/// them: edge's flow (alice), its refusals (dave, erin), session expiry (frank), refreshes
/// (ivan), the hostile network (grace, heidi), the OAuth client's two tests (judy, ken; liam,
/// mia), the confidential client over HTTPS (nina, oscar), a page rendered while a status is
/// published (pat), clearing a status (quinn), and a sign-in that reads the person's own
/// statuses (rose), the backfill of a network with a hostile relay and PDS (uma, vic), and
/// sign-ins while DNS or the PLC is down (xena, yuri).
pub const PEOPLE: [&str; 20] = [
    "alice", "dave", "erin", "frank", "ivan", "grace", "heidi", "judy", "ken", "liam", "mia",
    "nina", "oscar", "pat", "quinn", "rose", "uma", "vic", "xena", "yuri",
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
    config.https_app = Some(https_app()?);
    let mut devnet = Devnet::start(&tools, &config)?;
    devnet.end_with_this_process()?;
    let devnet = Arc::new(devnet);
    *slot = Some(devnet.clone());
    Ok(devnet)
}
