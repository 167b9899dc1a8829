//! The confidential OAuth client as production runs it, against the reference authorization
//! server (the local PDS's OAuth provider): edge served over HTTPS at a name that is not loopback
//! (`statusphere.internal`, a certificate from the run's CA, which the PDS trusts), its client
//! metadata and JWKS fetched by the PDS from edge itself, and `private_key_jwt` assertions at PAR,
//! token, refresh and revoke. Then a key rotation in the three steps docs/operations.md gives,
//! each a restart of the stack as a redeploy would be: a session keeps refreshing with the key it
//! began under while new sign-ins take the new key, and ends (sign in again) once its key is
//! retired. A revoke always answers 200 at this server, so sign-out is proven by the refresh it
//! leaves impossible.

use anyhow::{ensure, Context, Result};
use e2e::pds;
use e2e::tables::Tables;
use e2e::web::{did_of, set_cookie, start_signing_in, Browser, Net, SignIn};
use oauth::jose::Key;
use oauth::{Client, HandleResolution, IdentityConfig, OAuth, Reach, Session};
use reqwest::StatusCode;
use serde_json::Value;
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// The keys of `OAUTH_PRIVATE_KEY`, in ring order (the first signs new sign-ins).
fn ring(keys: &[&Key]) -> String {
    let jwks: Vec<String> = keys.iter().map(|key| key.to_jwk()).collect();
    format!("[{}]", jwks.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confidential_client_over_https() -> Result<()> {
    let old = Key::generate()?.with_kid("2026-old");
    let new = Key::generate()?.with_kid("2026-new");
    let keys = ring(&[&old]);
    let mut net = tokio::task::block_in_place(|| {
        start_signing_in(
            "confidential",
            SignIn::Confidential { keys: &keys },
            |config| {
                // Every write refreshes first: each one is a refresh under the session's key.
                config.with_var(Worker::Edge, "REFRESH_MARGIN_SECONDS", "1000000000")
            },
        )
    })?;
    let result = rotate(&mut net, &old, &new).await;
    net.with_log(result)
}

async fn rotate(net: &mut Net, old: &Key, new: &Key) -> Result<()> {
    let nina = did_of(&net.devnet, "nina");
    let oscar = did_of(&net.devnet, "oscar");
    let base = net.stack.base_url();
    ensure!(base.starts_with("https://statusphere.internal:"), "{base}");

    // The documents the authorization server reads, at the client id, over HTTPS.
    let mut browser = Browser::new(&net.stack);
    let metadata = json_document(&mut browser, "/oauth-client-metadata.json").await?;
    let client_id = format!("{base}/oauth-client-metadata.json");
    ensure!(metadata["client_id"] == client_id.as_str(), "{metadata}");
    ensure!(metadata["client_uri"] == base.as_str(), "{metadata}");
    ensure!(
        metadata["redirect_uris"][0] == format!("{base}/oauth/callback").as_str(),
        "{metadata}"
    );
    ensure!(
        metadata["token_endpoint_auth_method"] == "private_key_jwt"
            && metadata["jwks_uri"] == format!("{base}/.well-known/jwks.json").as_str(),
        "{metadata}"
    );
    ensure!(published_kids(&mut browser).await? == ["2026-old"]);

    // Sign-in: PAR and the code exchange each carry an assertion signed by the old key; the
    // session remembers that key. The cookie is production's: __Host-, Secure.
    let callback = browser.sign_in_as("nina").await?;
    let issued = set_cookie(&callback)?;
    ensure!(
        issued.starts_with("__Host-sid=") && issued.contains("Secure"),
        "{issued}"
    );
    ensure!(session_of(net, &nina).await?.client_kid.as_deref() == Some("2026-old"));
    let before = session_of(net, &nina).await?;
    write(&mut browser, "🦋").await?;
    let after = session_of(net, &nina).await?;
    ensure!(
        after.refresh_token != before.refresh_token,
        "the write refreshed with a client assertion first"
    );
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &nina).await? == ["🦋"]);

    // Rotation, step 1: the new key is published after the old one. Nina's session still
    // refreshes under the old key; new sign-ins still use it too.
    restart_with(net, &ring(&[old, new]))?;
    ensure!(published_kids(&mut browser).await? == ["2026-old", "2026-new"]);
    write(&mut browser, "🚀").await?;
    ensure!(session_of(net, &nina).await?.refresh_token != after.refresh_token);

    // Step 2: the new key signs new sign-ins; nina's session keeps its old key.
    restart_with(net, &ring(&[new, old]))?;
    let mut other = Browser::new(&net.stack);
    other.sign_in_as("oscar").await?;
    ensure!(session_of(net, &oscar).await?.client_kid.as_deref() == Some("2026-new"));
    write(&mut other, "🧠").await?;
    write(&mut browser, "🌈").await?;
    ensure!(session_of(net, &nina).await?.client_kid.as_deref() == Some("2026-old"));

    // Step 3: the old key is retired. A session made under it cannot refresh any more (the
    // server would refuse an assertion by another key and end the grant): nina is asked to sign
    // in again, and then she is under the new key.
    restart_with(net, &ring(&[new]))?;
    ensure!(published_kids(&mut browser).await? == ["2026-new"]);
    let ended = browser.post("/status", &[("status", "💙")], None).await?;
    let status = ended.status();
    let text = ended.text().await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED && text.contains("sign in again"),
        "a session under a retired key answered {status}: {text}"
    );
    browser.sign_in_as("nina").await?;
    ensure!(session_of(net, &nina).await?.client_kid.as_deref() == Some("2026-new"));
    write(&mut browser, "💙").await?;
    write(&mut other, "😉").await?;
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &nina).await?.len() == 4);
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &oscar).await?.len() == 2);

    // Sign-out revokes the grant with an assertion by the session's key. The server answers a
    // revoke 200 whatever happened, so the proof is that the refresh token no longer works: the
    // same client (same id, same key, the session's own DPoP key) is refused with invalid_grant,
    // where a client the server did not recognise would get invalid_client.
    let grant = session_of(net, &oscar).await?;
    let out = other.post("/logout", &[], None).await?;
    ensure!(out.status() == StatusCode::SEE_OTHER, "{}", out.status());
    let client = Client::confidential(
        &base,
        oauth::KeyRing::new(vec![new.clone()])?,
        "atproto repo:xyz.statusphere.status",
        IdentityConfig {
            plc_url: net.devnet.plc_url.clone(),
            handles: HandleResolution::Service {
                url: net.devnet.pds_url.clone(),
            },
            reach: Reach::Local,
        },
    )?;
    let http = pds::Reqwest::default();
    let oauth = OAuth {
        http: &http,
        client: &client,
        now_s: e2e::now_ms() / 1000,
    };
    match oauth.refresh(&grant).await {
        Err(oauth::Error::Server { error, .. }) if error == "invalid_grant" => {}
        other => anyhow::bail!("the revoked grant still answers a refresh: {other:?}"),
    }
    Ok(())
}

/// The stack again with `keys` as its key ring (a redeploy with the secret changed).
fn restart_with(net: &mut Net, keys: &str) -> Result<()> {
    let tools = Tools::ensure()?;
    let config = net
        .stack
        .config()
        .clone()
        .with_var(Worker::Edge, "OAUTH_PRIVATE_KEY", keys);
    tokio::task::block_in_place(|| net.stack.restart(&tools, config))
}

/// A status POSTed from the page, which must be written (303 home).
async fn write(browser: &mut Browser, emoji: &str) -> Result<()> {
    let response = browser.post("/status", &[("status", emoji)], None).await?;
    let status = response.status();
    ensure!(
        status == StatusCode::SEE_OTHER,
        "POST /status {emoji} answered {status}: {}",
        response.text().await?
    );
    Ok(())
}

/// A JSON document of edge's, checked to be served as `application/json` (the provider refuses
/// anything else).
async fn json_document(browser: &mut Browser, path: &str) -> Result<Value> {
    let response = browser.get(path).await?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    ensure!(status == StatusCode::OK, "{path} answered {status}");
    ensure!(
        content_type.starts_with("application/json"),
        "{path} is {content_type}"
    );
    Ok(response.json().await?)
}

/// The kids of the published JWKS, in order; every key public only.
async fn published_kids(browser: &mut Browser) -> Result<Vec<String>> {
    let jwks = json_document(browser, "/.well-known/jwks.json").await?;
    let keys = jwks["keys"].as_array().context("no keys")?;
    ensure!(
        keys.iter().all(|k| k.get("d").is_none()),
        "a private key is published: {jwks}"
    );
    Ok(keys
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect())
}

/// The OAuth session edge keeps for `did` (D1, unsealed with the stack's keys).
async fn session_of(net: &Net, did: &str) -> Result<Session> {
    let (_, data) = Tables::oauth_session(&net.stack, did)
        .await?
        .with_context(|| format!("no OAuth session for {did}"))?;
    Ok(serde_json::from_str(&data)?)
}
