//! A person at the app without a real browser: plain HTTP with the headers a browser sends on the
//! app's own forms, the session cookie kept by hand, redirects not followed; their PDS's sign-in
//! and consent driven through its API (`pds::authorize`). Shared by the edge tests and the edge
//! benchmark; the real-Chromium test is `tests/chromium.rs`.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use xtask::devnet::{Devnet, DevnetConfig, DEMO_PASSWORD};
use xtask::sidecar::Sidecar;
use xtask::stack::{PublicOrigin, Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

use crate::pds::{self, Answer};
use crate::shared::APP_HOST;
use crate::tls::Front;

/// A browser: no redirects followed, the app's cookies kept by hand.
#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    pub base: String,
    /// The session cookie (`sid=…`), if any.
    pub cookie: Option<String>,
    /// The cookie binding sign-ins to this browser (`signin=…`), if any.
    pub sign_in_cookie: Option<String>,
}

impl Browser {
    /// A browser for `stack`; over HTTPS it trusts the run's CA (only) and finds the stack's
    /// name at 127.0.0.1, as a browser's DNS would find a deployed app.
    pub fn new(stack: &Stack) -> Browser {
        let mut http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(public) = &stack.config().public {
            let root = crate::shared::app_tls()
                .and_then(|app| app.ca.reqwest_root())
                .expect("the run's CA, which signed this stack's certificate");
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(root)
                .resolve(
                    &public.host,
                    std::net::SocketAddr::from(([127, 0, 0, 1], public.port)),
                );
        }
        Browser {
            http: http.build().expect("client"),
            base: stack.base_url(),
            cookie: None,
            sign_in_cookie: None,
        }
    }

    /// Keeps (or, when cleared, forgets) the cookies a response sets.
    fn keep_cookie(&mut self, response: &reqwest::Response) {
        for set in response.headers().get_all(SET_COOKIE) {
            let Ok(set) = set.to_str() else { continue };
            let pair = set.split(';').next().unwrap_or("").to_owned();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let slot = match name.trim_start_matches("__Host-") {
                "sid" => &mut self.cookie,
                "signin" => &mut self.sign_in_cookie,
                _ => continue,
            };
            *slot = (!value.is_empty()).then(|| pair.clone());
        }
    }

    /// The `Cookie` header this browser sends, if any.
    fn cookie_header(&self) -> Option<String> {
        let cookies: Vec<&str> = [&self.cookie, &self.sign_in_cookie]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        (!cookies.is_empty()).then(|| cookies.join("; "))
    }

    pub async fn get(&mut self, path_or_url: &str) -> Result<reqwest::Response> {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut request = self.http.get(url).header("sec-fetch-site", "same-origin");
        if let Some(cookie) = self.cookie_header() {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await?;
        self.keep_cookie(&response);
        Ok(response)
    }

    /// A form POST from the app's own page (or from `origin`, to play another site).
    pub async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Result<reqwest::Response> {
        self.post_accepting(path, form, origin, "text/html").await
    }

    /// The same POST as the page's script sends it (`fetch`, asking for JSON).
    pub async fn post_from_script(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        self.post_accepting(path, form, None, "application/json")
            .await
    }

    async fn post_accepting(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
        accept: &str,
    ) -> Result<reqwest::Response> {
        let origin = origin.map_or_else(|| self.base.clone(), str::to_owned);
        let site = if origin == self.base {
            "same-origin"
        } else {
            "cross-site"
        };
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .header("accept", accept)
            .form(form);
        if let Some(cookie) = self.cookie_header() {
            request = request.header(COOKIE, cookie);
        }
        let response = request.send().await?;
        self.keep_cookie(&response);
        Ok(response)
    }

    pub async fn page(&mut self) -> Result<String> {
        let response = self.get("/").await?;
        ensure!(
            response.status() == 200,
            "GET / answered {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// Signs in as the seeded account `user` (`alice` is `alice.test`), consenting at the PDS;
    /// the callback must send the browser home (303). Returns the callback's response.
    pub async fn sign_in_as(&mut self, user: &str) -> Result<reqwest::Response> {
        let response = self
            .sign_in(&format!("{user}.test"), user, Answer::Consent)
            .await?;
        if response.status() != StatusCode::SEE_OTHER {
            anyhow::bail!(
                "signing in as {user} answered {}: {}",
                response.status(),
                response.text().await?
            );
        }
        Ok(response)
    }

    /// POST /login, then the person at their PDS, then the callback: returns the callback's
    /// response.
    pub async fn sign_in(
        &mut self,
        input: &str,
        user: &str,
        answer: Answer,
    ) -> Result<reqwest::Response> {
        let redirect = self.callback_url(input, user, answer).await?;
        self.get(&redirect).await
    }

    /// POST /login, then the person at their PDS: returns the callback URL the PDS sends the
    /// browser to, not yet followed.
    pub async fn callback_url(
        &mut self,
        input: &str,
        user: &str,
        answer: Answer,
    ) -> Result<String> {
        let started = self.post("/login", &[("handle", input)], None).await?;
        ensure!(
            started.status() == StatusCode::SEE_OTHER,
            "login answered {}: {}",
            started.status(),
            started.text().await?
        );
        let authorize = location(&started)?;
        pds::authorize(&authorize, &format!("{user}.test"), DEMO_PASSWORD, answer).await
    }
}

/// The response's `Set-Cookie` header for the session cookie (or, if it sets none, its first).
pub fn set_cookie(response: &reqwest::Response) -> Result<String> {
    let all: Vec<&str> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let session = all
        .iter()
        .find(|c| c.starts_with("sid=") || c.starts_with("__Host-sid="));
    Ok(session
        .or(all.first())
        .context("no Set-Cookie")?
        .to_string())
}

/// What a page says, without its markup (tags dropped, white space folded; entities kept, so an
/// escaped `<` still reads `&#60;`).
pub fn page_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The response's `Location` header.
pub fn location(response: &reqwest::Response) -> Result<String> {
    Ok(response
        .headers()
        .get(LOCATION)
        .context("no Location")?
        .to_str()?
        .to_owned())
}

/// The local atproto network and a stack signing in against it; with [`start_live`], also the
/// sidecar bridging the PDS's firehose to the listener, as `cargo xtask dev` runs it.
pub struct Net {
    pub stack: Stack,
    pub jetstream: Option<Sidecar>,
    /// The binary's shared network ([`crate::shared::devnet`]), or one of this test's own.
    pub devnet: Arc<Devnet>,
    /// The HTTPS front of a stack signing in as the confidential client.
    pub front: Option<Front>,
}

/// How edge signs people in.
#[derive(Debug, Clone, Copy)]
pub enum SignIn<'a> {
    /// The loopback client, on plain http (as `cargo xtask dev` runs it).
    Loopback,
    /// Production's confidential client, with the private JWKs of `keys` (one, or a JSON array
    /// whose first signs), served over HTTPS at [`APP_HOST`] by a [`Front`].
    Confidential { keys: &'a str },
}

impl SignIn<'_> {
    /// `config` set up to sign in this way, and the front it needs.
    fn apply(self, config: StackConfig) -> Result<(StackConfig, Option<Front>)> {
        match self {
            SignIn::Loopback => Ok((config, None)),
            SignIn::Confidential { keys } => {
                let app = crate::shared::app_tls()?;
                let front = Front::start(app.leaf.server_config()?, config.port)?;
                let public = PublicOrigin {
                    host: APP_HOST.to_owned(),
                    port: front.port,
                };
                Ok((config.with_confidential_client(public, keys), Some(front)))
            }
        }
    }
}

impl Net {
    /// `result`, with the end of wrangler's log printed first when it is an error.
    pub fn with_log<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            eprintln!("wrangler log:\n{}", self.stack.log_tail(80));
        }
        result
    }
}

/// A stack signing in against the shared local network.
pub fn start(name: &str) -> Result<Net> {
    start_with(name, |config| config)
}

/// [`start`], with the stack's configuration adjusted first (a var, say).
pub fn start_with(name: &str, adjust: impl FnOnce(StackConfig) -> StackConfig) -> Result<Net> {
    start_signing_in(name, SignIn::Loopback, adjust)
}

/// [`start_with`], edge signing in as `sign_in` says.
pub fn start_signing_in(
    name: &str,
    sign_in: SignIn,
    adjust: impl FnOnce(StackConfig) -> StackConfig,
) -> Result<Net> {
    let tools = Tools::ensure()?;
    let devnet = crate::shared::devnet()?;
    let config = StackConfig::for_test(name)?.with_local_sign_in(&devnet.plc_url, &devnet.pds_url);
    let (config, front) = sign_in.apply(config)?;
    let stack = Stack::start(&tools, adjust(config))?;
    Ok(Net {
        stack,
        jetstream: None,
        devnet,
        front,
    })
}

/// The shared local network, and a stack whose listener polls a sidecar replaying `frames`:
/// written once the network's accounts exist, so that the frames can name them (a hostile
/// Jetstream's claims about real accounts, say).
pub fn start_with_replay(name: &str, frames: impl FnOnce(&Devnet) -> Vec<String>) -> Result<Net> {
    start_with_replay_and(name, frames, |config| config)
}

/// [`start_with_replay`], the stack's configuration adjusted first.
pub fn start_with_replay_and(
    name: &str,
    frames: impl FnOnce(&Devnet) -> Vec<String>,
    adjust: impl FnOnce(StackConfig) -> StackConfig,
) -> Result<Net> {
    let tools = Tools::ensure()?;
    xtask::sidecar::build()?;
    let devnet = crate::shared::devnet()?;
    let dir = crate::listening::run_dir(name)?;
    let file = dir.join("replay.jsonl");
    std::fs::write(&file, frames(&devnet).join("\n") + "\n")?;
    let jetstream = crate::listening::start_sidecar(&dir, &file, name, &[])?;
    reading(
        name,
        &tools,
        devnet,
        jetstream,
        "poll",
        SignIn::Loopback,
        |config| adjust(config.with_var(Worker::Listener, "START_FROM_US", "0")),
    )
}

/// A stack signing in against `devnet` as `sign_in` says, whose listener reads `jetstream` in
/// `mode`.
fn reading(
    name: &str,
    tools: &Tools,
    devnet: Arc<Devnet>,
    jetstream: Sidecar,
    mode: &str,
    sign_in: SignIn,
    adjust: impl FnOnce(StackConfig) -> StackConfig,
) -> Result<Net> {
    let config = StackConfig::for_test(name)?
        .with_var(Worker::Listener, "JETSTREAM_URLS", &jetstream.url)
        .with_var(Worker::Listener, "MODE", mode)
        .with_local_sign_in(&devnet.plc_url, &devnet.pds_url);
    let (config, front) = sign_in.apply(config)?;
    let stack = Stack::start(tools, adjust(config))?;
    Ok(Net {
        stack,
        jetstream: Some(jetstream),
        devnet,
        front,
    })
}

/// The whole local app: a network of its own (alice, bob and carol), the sidecar bridging its PDS's
/// firehose to a local Jetstream, and a stack whose listener reads it live; records written on
/// the PDS by any client reach D1 and open pages.
pub fn start_live(name: &str) -> Result<Net> {
    start_live_with(name, SignIn::Loopback, |config| config)
}

/// [`start_live`], edge signing in as `sign_in` says, the stack's configuration adjusted first.
pub fn start_live_with(
    name: &str,
    sign_in: SignIn,
    adjust: impl FnOnce(StackConfig) -> StackConfig,
) -> Result<Net> {
    let tools = Tools::ensure()?;
    xtask::sidecar::build()?;
    let mut devnet_config = DevnetConfig::for_test(name)?;
    devnet_config.https_app = Some(crate::shared::https_app()?);
    // carol's statuses come and go in the Chromium test's count checks.
    devnet_config.accounts.push("carol".into());
    let devnet = Arc::new(Devnet::start(&tools, &devnet_config)?);
    let dir = crate::listening::run_dir(name)?;
    let jetstream = Sidecar::start(
        &[
            "--listen".into(),
            format!("127.0.0.1:{}", xtask::net::free_port()?),
            "--firehose".into(),
            devnet.pds_ws(),
        ],
        &dir.join("sidecar.log"),
    )?;
    reading(name, &tools, devnet, jetstream, "live", sign_in, adjust)
}

pub fn did_of(devnet: &Devnet, name: &str) -> String {
    let handle = format!("{name}.test");
    devnet
        .accounts
        .iter()
        .find(|a| a.handle == handle)
        .expect("seeded")
        .did
        .clone()
}
