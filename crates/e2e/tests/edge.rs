//! Edge end to end against a real local atproto network: `wrangler dev` with the three workers,
//! the local PLC + PDS (`@atproto/dev-env`), and a person driven over plain HTTP (their PDS's
//! sign-in and consent through its own API, e2e::pds). They sign in, set a status that lands in
//! their repo and in D1 and reaches an open page at once, and sign out; and every refusal says
//! why: cross-site posts, invalid statuses, too many writes, a stale or foreign sign-in answer,
//! declined consent, a session that ended elsewhere.

use std::sync::Arc;
use std::time::Duration;

#[path = "edge/attacks.rs"]
mod attacks;

use anyhow::{bail, ensure, Context, Result};
use domain::wire::ServerMessage;
use e2e::pds::{self, Answer};
use e2e::web::{
    did_of, location, page_text, set_cookie, start, start_live, start_with, Browser, Net,
};
use e2e::Page;
use reqwest::StatusCode;
use xtask::devnet::DEMO_PASSWORD;
use xtask::workers::Worker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_set_a_status_see_it_sign_out() -> Result<()> {
    let net = tokio::task::block_in_place(|| start("edge-flow"))?;
    let result = flow(&net).await;
    net.with_log(result)
}

async fn flow(net: &Net) -> Result<()> {
    let alice = did_of(&net.devnet, "alice");
    let mut browser = Browser::new(&net.stack);

    // Signed out: the sign-in form, the grid disabled.
    let page = browser.page().await?;
    ensure!(
        page.contains("action=\"/login\"") && page.contains("Sign in to set your status"),
        "{page}"
    );

    // Sign in as alice: a session cookie with the right flags, and her handle on the page.
    let callback = browser.sign_in_as("alice").await?;
    let issued = set_cookie(&callback)?;
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        ensure!(issued.contains(flag), "cookie lacks {flag}: {issued}");
    }
    ensure!(
        !issued.contains("Secure"),
        "plain-http localhost gets no Secure flag: {issued}"
    );
    ensure!(issued.starts_with("sid="), "{issued}");
    let page = browser.page().await?;
    ensure!(
        page_text(&page).contains("Signed in as alice.test"),
        "{page}"
    );

    // An open page receives the status the moment it is written.
    let mut socket = Page::connect(net.stack.port(), None).await?;
    let posted = browser.post("/status", &[("status", "🦋")], None).await?;
    ensure!(
        posted.status() == StatusCode::SEE_OTHER,
        "POST /status answered {}: {}",
        posted.status(),
        posted.text().await?
    );
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next_frame()).await??;
    let ServerMessage::StatusUpserted { status } = frame.message else {
        anyhow::bail!("expected a status, got {:?}", frame.message);
    };
    ensure!(
        status.author_did == alice && status.status == "🦋",
        "{status:?}"
    );
    ensure!(status.handle.as_deref() == Some("alice.test"), "{status:?}");
    // In her repo on the PDS, and in D1 (the page reads D1).
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &alice).await? == vec!["🦋".to_owned()]);
    let page = browser.page().await?;
    ensure!(page_text(&page).contains("is feeling 🦋 today"), "{page}");
    ensure!(
        page.contains("class=\"emoji current\""),
        "her status is highlighted: {page}"
    );

    // Refusals, each with a reason and nothing written.
    let cross = browser
        .post("/status", &[("status", "💀")], Some("http://evil.example"))
        .await?;
    ensure!(
        cross.status() == StatusCode::FORBIDDEN,
        "cross-site POST answered {}",
        cross.status()
    );
    let invalid = browser
        .post("/status", &[("status", "not one emoji")], None)
        .await?;
    ensure!(
        invalid.status() == StatusCode::BAD_REQUEST,
        "invalid status answered {}",
        invalid.status()
    );
    ensure!(invalid.text().await?.contains("not a valid status"));
    ensure!(
        pds::repo_statuses(&net.devnet.pds_url, &alice).await?.len() == 1,
        "refused writes wrote nothing"
    );

    // The page's script posts with fetch and gets JSON: the status, or why not.
    let scripted = browser
        .post_from_script("/status", &[("status", "🚀")])
        .await?;
    ensure!(scripted.status() == StatusCode::OK, "{}", scripted.status());
    let body: serde_json::Value = scripted.json().await?;
    ensure!(
        body["status"]["status"] == "🚀" && body["status"]["author_did"] == alice.as_str(),
        "{body}"
    );
    let scripted = browser
        .post_from_script("/status", &[("status", "two words")])
        .await?;
    ensure!(scripted.status() == StatusCode::BAD_REQUEST);
    let body: serde_json::Value = scripted.json().await?;
    ensure!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a valid status")),
        "{body}"
    );

    // Too many writes in a minute: the budget (10) stops the 11th.
    let mut last = StatusCode::OK;
    for i in 0..9 {
        let emoji = ["🚀", "🧠"][i % 2];
        last = browser
            .post("/status", &[("status", emoji)], None)
            .await?
            .status();
        if last != StatusCode::SEE_OTHER {
            break;
        }
    }
    ensure!(
        last == StatusCode::TOO_MANY_REQUESTS,
        "the budget did not stop a loop: {last}"
    );
    ensure!(
        pds::repo_statuses(&net.devnet.pds_url, &alice).await?.len() == 10,
        "10 writes per minute"
    );

    // Sign out: the cookie is cleared, and the old one no longer works.
    let old_cookie = browser.cookie.clone();
    let out = browser.post("/logout", &[], None).await?;
    ensure!(out.status() == StatusCode::SEE_OTHER);
    let cleared = set_cookie(&out)?;
    ensure!(cleared.contains("Max-Age=0"), "{cleared}");
    browser.cookie = old_cookie;
    let page = browser.page().await?;
    ensure!(
        page.contains("action=\"/login\""),
        "the old cookie is dead: {page}"
    );
    let after = browser.post("/status", &[("status", "🦋")], None).await?;
    ensure!(
        after.status() == StatusCode::UNAUTHORIZED,
        "a write after sign-out answered {}",
        after.status()
    );
    ensure!(after.text().await?.contains("Sign in"));
    Ok(())
}

/// This stack resolves handles as production does, over DNS-over-HTTPS (`e2e::names` on plain
/// http, the local network's reach): each person's `_atproto` TXT record names their DID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_failures_say_why() -> Result<()> {
    let names = e2e::names::Names::start().await?;
    let devnet = tokio::task::block_in_place(e2e::shared::devnet)?;
    for account in &devnet.accounts {
        let record = format!("did={}", account.did);
        names.set_txt(&format!("_atproto.{}", account.handle), &[&record]);
    }
    let mut net = tokio::task::block_in_place(|| {
        start_with("edge-failures", |config| {
            config
                .with_var(Worker::Edge, "HANDLE_RESOLVER", "dns")
                .with_var(Worker::Edge, "DOH_URL", &names.doh_http_url())
        })
    })?;
    let result = async {
        failures(&net).await?;
        identity_services_down_then_back(&mut net, &names).await?;
        // The sign-ins went through DNS, and what they looked up is kept in D1 for the next.
        ensure!(
            names.hits("127.0.0.1", "/dns-query") >= 3,
            "DNS was not asked"
        );
        let cached = e2e::tables::Tables::identity_cache(&net.stack).await?;
        ensure!(
            cached
                .iter()
                .any(|k| k.contains("/dns-query?name=_atproto.dave.test"))
                && cached
                    .iter()
                    .any(|k| k.contains(&did_of(&net.devnet, "dave"))),
            "nothing cached: {cached:?}"
        );
        Ok(())
    }
    .await;
    net.with_log(result)
}

/// DNS-over-HTTPS answering 503, then the PLC unreachable (a stack whose `PLC_URL` goes
/// nowhere): each sign-in says why it cannot go on and signs nobody in; once the service is back,
/// the same sign-in goes through (no failure was cached).
async fn identity_services_down_then_back(net: &mut Net, names: &e2e::names::Names) -> Result<()> {
    let mut browser = Browser::new(&net.stack);
    names.fail_dns(Some(503));
    let answer = browser
        .post("/login", &[("handle", "xena.test")], None)
        .await?;
    let (code, body) = (answer.status(), answer.text().await?);
    ensure!(
        code == StatusCode::BAD_REQUEST && body.contains("xena.test"),
        "DNS down: {code}: {}",
        e2e::web::page_text(&body)
    );
    ensure!(browser.cookie.is_none(), "signed in with DNS down");
    names.fail_dns(None);
    browser.sign_in_as("xena").await.context("DNS back")?;

    let tools = xtask::toolchain::Tools::locate()?;
    let config = net.stack.config().clone();
    let without_plc = config
        .clone()
        .with_var(Worker::Edge, "PLC_URL", xtask::stack::NO_PLC);
    tokio::task::block_in_place(|| net.stack.restart(&tools, without_plc))?;
    let mut browser = Browser::new(&net.stack);
    let answer = browser
        .post("/login", &[("handle", "yuri.test")], None)
        .await?;
    let (code, body) = (answer.status(), answer.text().await?);
    ensure!(
        code == StatusCode::BAD_REQUEST
            && e2e::web::page_text(&body).contains("could not be found"),
        "PLC down: {code}: {}",
        e2e::web::page_text(&body)
    );
    ensure!(browser.cookie.is_none(), "signed in with the PLC down");
    tokio::task::block_in_place(|| net.stack.restart(&tools, config))?;
    let mut browser = Browser::new(&net.stack);
    browser.sign_in_as("yuri").await.context("PLC back")?;
    Ok(())
}

async fn failures(net: &Net) -> Result<()> {
    let mut browser = Browser::new(&net.stack);

    // Names that cannot be signed in.
    for (input, says) in [
        ("nobody.test", "does not resolve"),
        ("not a handle", "not a valid handle"),
    ] {
        let response = browser.post("/login", &[("handle", input)], None).await?;
        ensure!(
            response.status() == StatusCode::BAD_REQUEST,
            "{input}: {}",
            response.status()
        );
        let body = response.text().await?;
        ensure!(body.contains(says), "{input}: {body}");
    }
    // Cross-site sign-in attempts are refused before anything happens.
    let cross = browser
        .post(
            "/login",
            &[("handle", "dave.test")],
            Some("http://evil.example"),
        )
        .await?;
    ensure!(cross.status() == StatusCode::FORBIDDEN);

    // Declined consent: back on the page, signed out, told why.
    let declined = browser.sign_in("dave.test", "dave", Answer::Reject).await?;
    ensure!(
        declined.status() == StatusCode::FORBIDDEN,
        "declined answered {}",
        declined.status()
    );
    ensure!(declined.text().await?.contains("declined"));
    ensure!(browser.cookie.is_none());

    // A callback for a sign-in that does not exist, or was already used.
    let unknown = browser
        .get("/oauth/callback?code=x&state=nope&iss=http%3A%2F%2Flocalhost")
        .await?;
    ensure!(unknown.status() == StatusCode::BAD_REQUEST);
    ensure!(unknown
        .text()
        .await?
        .contains("expired or was already used"));
    let started = browser
        .post("/login", &[("handle", "dave.test")], None)
        .await?;
    let redirect = pds::authorize(
        &location(&started)?,
        "dave.test",
        DEMO_PASSWORD,
        Answer::Consent,
    )
    .await?;
    // The answer altered to claim another issuer: refused, and the sign-in is spent.
    let forged = redirect.replace(
        "iss=http%3A%2F%2Flocalhost",
        "iss=http%3A%2F%2Fevil.example",
    );
    ensure!(forged != redirect, "no iss in {redirect}");
    let wrong_iss = browser.get(&forged).await?;
    ensure!(
        wrong_iss.status() == StatusCode::BAD_REQUEST,
        "wrong iss answered {}",
        wrong_iss.status()
    );
    ensure!(wrong_iss.text().await?.contains("did not come from"));
    let replay = browser.get(&redirect).await?;
    ensure!(
        replay.status() == StatusCode::BAD_REQUEST,
        "a spent sign-in answered {}",
        replay.status()
    );
    ensure!(browser.cookie.is_none());

    // A session that ended elsewhere: erin signs in twice, signs out in one browser; the other is
    // back at the sign-in form with no loop, and its writes are refused.
    let mut phone = Browser::new(&net.stack);
    browser.sign_in_as("erin").await?;
    phone.sign_in_as("erin").await?;
    ensure!(phone.page().await?.contains("Signed in as"));
    browser.post("/logout", &[], None).await?;
    let page = phone.page().await?;
    ensure!(page.contains("action=\"/login\""), "{page}");
    let write = phone.post("/status", &[("status", "🦋")], None).await?;
    ensure!(write.status() == StatusCode::UNAUTHORIZED);

    // A cookie nobody issued is simply not a session.
    phone.cookie = Some(format!("sid={}", "A".repeat(43)));
    ensure!(phone.page().await?.contains("action=\"/login\""));
    Ok(())
}

/// The whole local app (the PDS's firehose bridged to the listener): a record another app writes
/// reaches open pages and D1, its author's unknown handle is looked up by the cron, and the
/// hostile status `<` renders as text; a grant revoked at the PDS ends the session with a clear
/// message and nothing written; a PDS that is down gets a clear message and nothing in D1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_and_what_breaks() -> Result<()> {
    let mut net = tokio::task::block_in_place(|| start_live("edge-network"))?;
    let result = network(&mut net).await;
    net.with_log(result)
}

async fn next_message(
    socket: &mut Page,
    want: impl Fn(&ServerMessage) -> bool,
) -> Result<ServerMessage> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), socket.next_frame())
            .await
            .context("no such message within 15 s")??;
        if want(&frame.message) {
            return Ok(frame.message);
        }
    }
}

async fn network(net: &mut Net) -> Result<()> {
    let (alice, bob) = (did_of(&net.devnet, "alice"), did_of(&net.devnet, "bob"));
    let base = net.stack.base_url();

    // Another app writes `<` to bob's repo: it reaches an open page through the firehose, the
    // sidecar, the listener and the broker, by DID (the firehose never named bob's handle).
    let mut socket = Page::connect(net.stack.port(), None).await?;
    let created_at = domain::present::iso8601(e2e::now_ms());
    pds::write_record(
        &net.devnet.pds_url,
        "bob.test",
        "xyz.statusphere.status",
        serde_json::json!({ "status": "<", "createdAt": created_at }),
    )
    .await?;
    let arrived = next_message(
        &mut socket,
        |m| matches!(m, ServerMessage::StatusUpserted { status } if status.status == "<"),
    )
    .await?;
    let ServerMessage::StatusUpserted { status } = arrived else {
        unreachable!()
    };
    ensure!(
        status.author_did == bob && status.handle.is_none(),
        "{status:?}"
    );

    // The cron looks the handle up (DID document, then back from the handle) and tells pages.
    let cron = reqwest::get(format!("{base}/__scheduled?cron=*+*+*+*+*")).await?;
    ensure!(cron.status() == 200, "cron answered {}", cron.status());
    let relabeled = next_message(&mut socket, |m| {
        matches!(m, ServerMessage::HandleChanged { .. })
    })
    .await?;
    ensure!(
        relabeled
            == ServerMessage::HandleChanged {
                did: bob.clone(),
                handle: Some("bob.test".into())
            },
        "{relabeled:?}"
    );
    let mut visitor = Browser::new(&net.stack);
    let page = visitor.page().await?;
    ensure!(page.contains("@bob.test</a>"), "{page}");
    ensure!(
        page_text(&page).contains("is feeling &#60; today"),
        "the status is escaped: {page}"
    );
    ensure!(!page.contains("feeling < today"), "{page}");

    // Alice revokes the app's grant at her PDS (as its account settings would): her next write
    // finds the token refused, the refresh refused, and the session over.
    let mut browser = Browser::new(&net.stack);
    browser.sign_in_as("alice").await?;
    let (sealed, stored) = e2e::tables::Tables::oauth_session(&net.stack, &alice)
        .await?
        .context("no OAuth session in D1")?;
    // Sealed at rest: nothing in D1 reads as a token or a key. (Field names only: a short
    // pattern such as a JWT's `eyJ` turns up in random base64 by chance; the values themselves
    // are checked below.)
    for secret in ["access_token", "refresh_token", "\"d\""] {
        ensure!(
            !sealed.contains(secret),
            "{secret} readable in D1: {sealed:.80}"
        );
    }
    ensure!(sealed.starts_with("v1.local."), "{sealed:.80}");
    let session: oauth::Session = serde_json::from_str(&stored)?;
    let refresh_token = session
        .refresh_token
        .as_deref()
        .unwrap_or("no refresh token");
    ensure!(
        !sealed.contains(&session.access_token)
            && !sealed.contains(refresh_token)
            && !sealed.contains(&session.dpop_key.to_jwk()),
        "tokens readable in D1"
    );
    let identity = oauth::IdentityConfig {
        plc_url: net.devnet.plc_url.clone(),
        handles: oauth::HandleResolution::Service {
            url: net.devnet.pds_url.clone(),
        },
        reach: oauth::Reach::Local,
    };
    let client = oauth::Client::loopback(
        &format!("{base}/oauth/callback"),
        "atproto repo:xyz.statusphere.status",
        identity,
    );
    let http = pds::Reqwest::default();
    oauth::OAuth {
        http: &http,
        client: &client,
        now_s: e2e::now_ms() / 1000,
    }
    .revoke(&session)
    .await?;
    let refused = browser.post("/status", &[("status", "🦋")], None).await?;
    if refused.status() != StatusCode::UNAUTHORIZED {
        bail!(
            "after revoke: {}: {}",
            refused.status(),
            refused.text().await?
        );
    }
    let cleared = set_cookie(&refused)?;
    ensure!(cleared.contains("Max-Age=0"), "{cleared}");
    ensure!(refused.text().await?.contains("sign-in has ended"));
    ensure!(
        pds::repo_statuses(&net.devnet.pds_url, &alice)
            .await?
            .is_empty(),
        "nothing written"
    );
    ensure!(
        browser.page().await?.contains("action=\"/login\""),
        "back at the sign-in form"
    );

    // Bob's PDS goes down: a clear message, and nothing in D1 (his status is still `<`).
    let mut bobs = Browser::new(&net.stack);
    bobs.sign_in_as("bob").await?;
    Arc::get_mut(&mut net.devnet)
        .context("this test's network is its own")?
        .stop();
    let down = bobs.post("/status", &[("status", "🚀")], None).await?;
    ensure!(
        down.status() == StatusCode::BAD_GATEWAY,
        "PDS down: {}",
        down.status()
    );
    let text = down.text().await?;
    ensure!(
        text.contains("could not be reached") && text.contains("Nothing was changed"),
        "{text}"
    );
    let page = bobs.page().await?;
    ensure!(page.contains("Signed in as"), "still signed in: {page}");
    ensure!(!page.contains("🚀 today"), "nothing in D1: {page}");
    ensure!(
        page_text(&page).contains("is feeling &#60; today"),
        "{page}"
    );
    Ok(())
}

/// A status published while a page is being rendered reaches that page: edge reads the broker's
/// head before D1, so a publish between the two reads is in the page's D1 read and also comes
/// again over a socket opened with the page's `since` (which the page skips as seen). Read the
/// other way round, it would be in neither. The test stack holds the page between its two reads
/// (`?__test_pause_ms`, `TEST_HOOKS` only) while another person writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_published_while_a_page_renders_reaches_it() -> Result<()> {
    let net = tokio::task::block_in_place(|| start("edge-gapless"))?;
    let result = publish_mid_render(&net).await;
    net.with_log(result)
}

async fn publish_mid_render(net: &Net) -> Result<()> {
    let pat = did_of(&net.devnet, "pat");
    let mut writer = Browser::new(&net.stack);
    writer.sign_in_as("pat").await?;
    let mut reader = Browser::new(&net.stack);
    let rendering = tokio::spawn(async move {
        let response = reader.get("/?__test_pause_ms=2500").await?;
        ensure!(response.status() == StatusCode::OK, "{}", response.status());
        Ok::<_, anyhow::Error>(response.text().await?)
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    ensure!(!rendering.is_finished(), "the page did not wait");
    let written = writer
        .post_from_script("/status", &[("status", "🌈")])
        .await?;
    ensure!(written.status() == StatusCode::OK, "{}", written.status());
    let body: serde_json::Value = written.json().await?;
    let uri = body["status"]["uri"].as_str().context("no uri")?.to_owned();
    ensure!(uri.starts_with(&format!("at://{pat}/")), "{uri}");
    let page = rendering.await??;
    ensure!(
        page.contains(&format!("data-uri=\"{uri}\"")),
        "the page read D1 after the publish: {page}"
    );
    let (shard, seq) = e2e::live_from(&page).context("no data-shard and data-seq on the page")?;
    let mut socket = Page::connect_to(net.stack.port(), shard, Some(seq)).await?;
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next_frame()).await??;
    ensure!(
        frame.seq == seq + 1,
        "the next message after the page's head: {frame:?}"
    );
    let ServerMessage::StatusUpserted { status } = frame.message else {
        bail!("expected pat's status, got {:?}", frame.message);
    };
    ensure!(status.uri == uri, "{status:?}");
    Ok(())
}

/// A person clears their status: it is deleted from their repository, tombstoned in D1 and
/// published (the delete and the counts) at once; the status before it is current again. The
/// same CSRF check, sign-in and error handling as writing one; nothing to clear is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_clears_their_status() -> Result<()> {
    let net = tokio::task::block_in_place(|| start("edge-clear"))?;
    let result = clear_flow(&net).await;
    net.with_log(result)
}

async fn clear_flow(net: &Net) -> Result<()> {
    let quinn = did_of(&net.devnet, "quinn");
    let mut browser = Browser::new(&net.stack);
    let signed_out = browser.post("/status/clear", &[], None).await?;
    ensure!(
        signed_out.status() == StatusCode::UNAUTHORIZED,
        "{}",
        signed_out.status()
    );
    browser.sign_in_as("quinn").await?;
    let page = browser.page().await?;
    ensure!(
        page.contains("id=\"clear\" hidden"),
        "no status, no clear button shown: {page}"
    );
    let nothing = browser.post_from_script("/status/clear", &[]).await?;
    ensure!(
        nothing.status() == StatusCode::BAD_REQUEST,
        "{}",
        nothing.status()
    );
    ensure!(nothing.text().await?.contains("no status to clear"));

    for emoji in ["🦋", "🚀"] {
        let written = browser.post("/status", &[("status", emoji)], None).await?;
        ensure!(
            written.status() == StatusCode::SEE_OTHER,
            "{}",
            written.status()
        );
    }
    let page = browser.page().await?;
    ensure!(
        page.contains("id=\"clear\">"),
        "the clear button shows: {page}"
    );

    // Another site cannot clear it.
    let cross = browser
        .post("/status/clear", &[], Some("http://evil.example"))
        .await?;
    ensure!(
        cross.status() == StatusCode::FORBIDDEN,
        "{}",
        cross.status()
    );
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &quinn).await?.len() == 2);

    // From the page's script: the record goes from the repo, the row becomes a tombstone, the
    // status before is current again, and open pages hear of it with the counts.
    let mut socket = Page::connect(net.stack.port(), None).await?;
    let cleared = browser.post_from_script("/status/clear", &[]).await?;
    ensure!(cleared.status() == StatusCode::OK, "{}", cleared.status());
    let body: serde_json::Value = cleared.json().await?;
    let uri = body["deleted"]
        .as_str()
        .context("no deleted uri")?
        .to_owned();
    ensure!(uri.starts_with(&format!("at://{quinn}/")), "{body}");
    ensure!(body["current"] == "🦋", "{body}");
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &quinn).await? == ["🦋"]);
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next_frame()).await??;
    let ServerMessage::StatusDeleted {
        uri: gone,
        author_did,
    } = frame.message
    else {
        bail!("expected the delete, got {:?}", frame.message);
    };
    ensure!(gone == uri && author_did == quinn);
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next_frame()).await??;
    let ServerMessage::CountsChanged { counts } = frame.message else {
        bail!("expected the counts, got {:?}", frame.message);
    };
    let count = |status: &str| counts.iter().find(|c| c.status == status).map(|c| c.count);
    ensure!(
        count("🚀") == Some(0) && count("🦋") == Some(1),
        "{counts:?}"
    );
    let tables = e2e::tables::Tables::of_stack(&net.stack.config().persist_dir).await?;
    let row = tables
        .status
        .iter()
        .find(|r| r["uri"] == uri.as_str())
        .context("no row for the cleared status")?;
    ensure!(
        row["deleted"] == 1 && row["status"] == "",
        "a tombstone: {row}"
    );
    let page = browser.page().await?;
    ensure!(page_text(&page).contains("is feeling 🦋 today"), "{page}");
    ensure!(
        !page.contains(&format!("data-uri=\"{uri}\"")),
        "the cleared line is gone"
    );

    // Without the script: the form posts and redirects; then nothing is left to clear.
    let posted = browser.post("/status/clear", &[], None).await?;
    ensure!(
        posted.status() == StatusCode::SEE_OTHER,
        "{}",
        posted.status()
    );
    ensure!(pds::repo_statuses(&net.devnet.pds_url, &quinn)
        .await?
        .is_empty());
    let page = browser.page().await?;
    ensure!(
        !page.contains("aria-pressed=\"true\""),
        "no status is current: {page}"
    );
    ensure!(page.contains("id=\"clear\" hidden"), "{page}");
    let again = browser.post("/status/clear", &[], None).await?;
    ensure!(
        again.status() == StatusCode::BAD_REQUEST,
        "{}",
        again.status()
    );
    Ok(())
}

/// History: the home page pages back through everyone's statuses with an "older" link (a plain
/// link, a cursor that statuses arriving later do not shift), and each person has a page by
/// handle or DID; history pages are the feed alone, not live. Strange addresses get a 400 or 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_back_by_cursor() -> Result<()> {
    let net = tokio::task::block_in_place(|| start("edge-history"))?;
    let result = history(&net).await;
    net.with_log(result)
}

/// `did:plc:` and 24 characters, one per author.
fn history_did(n: usize) -> String {
    format!("did:plc:history{n:0>17}")
}

async fn history(net: &Net) -> Result<()> {
    // 35 statuses of three authors, one known by handle, as the listener would have stored them.
    let mut rows = Vec::new();
    for i in 0..35usize {
        let did = history_did(i % 3);
        let rkey = format!("3lbk222222{:03}", i);
        rows.push(format!(
            "('at://{did}/xyz.statusphere.status/{rkey}', '{did}', '{rkey}', '🦋', \
             '2026-11-24T00:00:00.000Z', {}, '{rkey}', 'network', 1)",
            1_700_000_000_000u64 + i as u64 * 1000
        ));
    }
    e2e::tables::Tables::execute(
        &net.stack,
        &format!(
            "INSERT INTO status (uri, author_did, rkey, status, created_at, indexed_at, rev, origin, confirmed) \
             VALUES {}; INSERT INTO account (did, handle) VALUES ('{}', 'hist.test');",
            rows.join(", "),
            history_did(0)
        ),
    )
    .await?;
    let uris = |page: &str| -> Vec<String> {
        page.split("data-uri=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|uri| !uri.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let older_link = |page: &str| -> Option<String> {
        let at = page.find("rel=\"next\"")?;
        let start = page[..at].rfind("href=\"")? + 6;
        Some(page[start..].split('"').next()?.replace("&amp;", "&"))
    };
    let mut browser = Browser::new(&net.stack);
    let first = browser.page().await?;
    let newest = uris(&first);
    ensure!(newest.len() == 30, "{} lines", newest.len());
    ensure!(
        first.contains(&format!("href=\"/profile/{}\"", history_did(0))),
        "authors link to their page here"
    );
    let older = older_link(&first).context("no older link")?;
    ensure!(older.starts_with("/?before="), "{older}");
    let second = browser.get(&older).await?;
    ensure!(second.status() == StatusCode::OK, "{}", second.status());
    let second = second.text().await?;
    let rest = uris(&second);
    ensure!(rest.len() == 5, "{rest:?}");
    ensure!(rest.iter().all(|u| !newest.contains(u)), "no line twice");
    ensure!(
        !second.contains("data-live") && !second.contains("id=\"grid\""),
        "the feed alone"
    );
    ensure!(second.contains(">Newest</a>") && older_link(&second).is_none());

    // A status arriving later does not shift the older page.
    e2e::tables::Tables::execute(
        &net.stack,
        &format!(
            "INSERT INTO status (uri, author_did, rkey, status, created_at, indexed_at, rev, origin, confirmed) \
             VALUES ('at://{did}/xyz.statusphere.status/3lbk222222999', '{did}', '3lbk222222999', '🚀', \
             '2026-11-24T00:00:00.000Z', 1800000000000, '3lbk222222999', 'network', 1)",
            did = history_did(1)
        ),
    )
    .await?;
    let again = browser.get(&older).await?.text().await?;
    ensure!(uris(&again) == rest, "the cursor is stable");

    // A person's page, by handle and by DID: theirs only.
    for id in ["hist.test", "@HIST.test", history_did(0).as_str()] {
        let response = browser.get(&format!("/profile/{id}")).await?;
        ensure!(
            response.status() == StatusCode::OK,
            "{id}: {}",
            response.status()
        );
        let page = response.text().await?;
        let theirs = uris(&page);
        ensure!(theirs.len() == 12, "{id}: {theirs:?}");
        ensure!(
            theirs.iter().all(|u| u.contains(&history_did(0))),
            "{id}: {theirs:?}"
        );
        ensure!(
            page_text(&page).contains("@hist.test"),
            "{id}: titled by handle"
        );
    }
    let unknown = browser.get(&format!("/profile/{}", history_did(7))).await?;
    ensure!(
        unknown.status() == StatusCode::OK,
        "a DID with nothing yet is an empty page"
    );
    ensure!(unknown.text().await?.contains("No statuses yet"));
    for (path, status) in [
        ("/profile/nobody.test", StatusCode::NOT_FOUND),
        ("/profile/%zz", StatusCode::BAD_REQUEST),
        ("/profile/not%20a%20handle", StatusCode::BAD_REQUEST),
        ("/?before=yesterday", StatusCode::BAD_REQUEST),
    ] {
        let response = browser.get(path).await?;
        ensure!(response.status() == status, "{path}: {}", response.status());
    }
    Ok(())
}

/// A person whose statuses the app never saw (written before it was deployed, or by another app
/// while its listener was away: here the stack reads no Jetstream at all) signs in, and the first
/// page they see knows them: their statuses are read from their repository (the revision first,
/// then the records, each checked: a hostile one is dropped), recorded, counted and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_reads_ones_own_statuses() -> Result<()> {
    // "A day later" below is a row's date moved back, not time passed: the cron must not skip its
    // reads for being quiet (`CRON_QUIET_SECONDS`).
    let net = tokio::task::block_in_place(|| {
        start_with("edge-import", |config| {
            config.with_var(Worker::Edge, "CRON_QUIET_SECONDS", "0")
        })
    })?;
    let result = own_statuses(&net).await;
    net.with_log(result)
}

async fn own_statuses(net: &Net) -> Result<()> {
    let rose = did_of(&net.devnet, "rose");
    let pds_url = &net.devnet.pds_url;
    // Today's: the page says "is feeling" only of a status from today.
    let now = domain::present::iso8601(e2e::now_ms());
    for status in ["💙", "🥹", "two words"] {
        let record = serde_json::json!({ "status": status, "createdAt": &now });
        pds::write_record(pds_url, "rose.test", "xyz.statusphere.status", record).await?;
    }
    let profile = |name: &str| serde_json::json!({ "displayName": name });
    let (profiles, self_key) = ("app.bsky.actor.profile", Some("self"));
    pds::put_record(
        pds_url,
        "rose.test",
        profiles,
        self_key,
        profile("Rose <b>"),
    )
    .await?;
    let mut visitor = Browser::new(&net.stack);
    ensure!(
        !visitor.page().await?.contains(&rose),
        "the app has not seen rose"
    );
    let mut socket = Page::connect(net.stack.port(), None).await?;

    let mut browser = Browser::new(&net.stack);
    browser.sign_in_as("rose").await?;
    let page = browser.page().await?;
    ensure!(
        page.contains("value=\"🥹\" class=\"emoji current\" aria-pressed=\"true\""),
        "her latest valid status is hers on the first page: {page}"
    );
    let text = page_text(&page);
    ensure!(
        text.contains("@rose.test is feeling 🥹") && text.contains("@rose.test is feeling 💙"),
        "{text}"
    );
    ensure!(
        !text.contains("two words"),
        "the hostile record is not shown"
    );

    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next_frame()).await??;
        seen.push(frame.message);
    }
    let statuses: Vec<&str> = seen
        .iter()
        .filter_map(|m| match m {
            ServerMessage::StatusUpserted { status } if status.author_did == rose => {
                Some(status.status.as_str())
            }
            _ => None,
        })
        .collect();
    ensure!(statuses.len() == 2 && statuses.contains(&"🥹"), "{seen:?}");
    ensure!(
        matches!(seen.last(), Some(ServerMessage::CountsChanged { counts }) if counts.iter().any(|c| c.status == "🥹" && c.count == 1)),
        "{seen:?}"
    );
    let tables = e2e::tables::Tables::of_stack(&net.stack.config().persist_dir).await?;
    let hers: Vec<_> = tables
        .status
        .iter()
        .filter(|r| r["author_did"] == rose.as_str())
        .collect();
    ensure!(hers.len() == 2, "{hers:?}");
    ensure!(
        hers.iter()
            .all(|r| r["origin"] == "network" && r["confirmed"] == 1),
        "recorded as the network's: {hers:?}"
    );

    // Signing in again reads them again and changes nothing.
    let mut again = Browser::new(&net.stack);
    again.sign_in_as("rose").await?;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), socket.next_frame()).await;
    ensure!(quiet.is_err(), "nothing new was published: {quiet:?}");

    // She renames herself elsewhere; a day later the cron reads her profile again, and open
    // pages relabel her lines.
    pds::put_record(pds_url, "rose.test", profiles, self_key, profile("Rose II")).await?;
    let cron = format!("{}/__scheduled?cron=*+*+*+*+*", net.stack.base_url());
    reqwest::get(&cron).await?.error_for_status()?;
    let too_soon = tokio::time::timeout(Duration::from_millis(1500), socket.next_frame()).await;
    ensure!(too_soon.is_err(), "read again within the day: {too_soon:?}");
    e2e::tables::Tables::execute(&net.stack, "UPDATE profile SET checked_at = 0").await?;
    reqwest::get(&cron).await?.error_for_status()?;
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next_frame()).await??;
    let ServerMessage::ProfileChanged { did, display_name } = frame.message else {
        bail!("expected her new name, got {:?}", frame.message);
    };
    ensure!(did == rose && display_name.as_deref() == Some("Rose II"));
    ensure!(visitor
        .page()
        .await?
        .contains("<bdi class=\"name net\">Rose II</bdi>"));
    Ok(())
}

/// A browser session ends when its time is up: the page is back at the sign-in form (no loop) and
/// writes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_expires() -> Result<()> {
    let net = tokio::task::block_in_place(|| {
        start_with("edge-expiry", |config| {
            config.with_var(Worker::Edge, "SESSION_TTL_SECONDS", "3")
        })
    })?;
    let mut browser = Browser::new(&net.stack);
    let signed_in = browser.sign_in_as("frank").await?;
    let cookie = set_cookie(&signed_in)?;
    ensure!(cookie.contains("Max-Age=3"), "{cookie}");
    ensure!(browser.page().await?.contains("Signed in as"));
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    // The browser would have dropped the cookie; one that is sent anyway is no session.
    let page = browser.page().await?;
    ensure!(page.contains("action=\"/login\""), "{page}");
    let write = browser.post("/status", &[("status", "🦋")], None).await?;
    ensure!(
        write.status() == StatusCode::UNAUTHORIZED,
        "{}",
        write.status()
    );
    ensure!(
        pds::repo_statuses(&net.devnet.pds_url, &did_of(&net.devnet, "frank"))
            .await?
            .is_empty()
    );
    Ok(())
}

/// Refresh tokens are single use, so refreshes must not race: with every write made to refresh
/// first (`REFRESH_MARGIN_SECONDS` beyond any token's life), one write gets new tokens, and five
/// writes at once all succeed. Had two of them refreshed with the same refresh token, the PDS
/// would have refused the second and ended the session (401); under the D1 lease one refreshes
/// while the others wait and then use the tokens it stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_take_turns() -> Result<()> {
    let net = tokio::task::block_in_place(|| {
        start_with("edge-refresh", |config| {
            config.with_var(Worker::Edge, "REFRESH_MARGIN_SECONDS", "1000000000")
        })
    })?;
    let result = take_turns(&net).await;
    net.with_log(result)
}

async fn take_turns(net: &Net) -> Result<()> {
    let ivan = did_of(&net.devnet, "ivan");
    let tokens = || async {
        let (_, data) = e2e::tables::Tables::oauth_session(&net.stack, &ivan)
            .await?
            .context("no OAuth session in D1")?;
        let session: oauth::Session = serde_json::from_str(&data)?;
        Ok::<_, anyhow::Error>((session.access_token, session.refresh_token))
    };
    let mut browser = Browser::new(&net.stack);
    browser.sign_in_as("ivan").await?;
    let signed_in = tokens().await?;
    let first = browser.post("/status", &[("status", "🦋")], None).await?;
    ensure!(
        first.status() == StatusCode::SEE_OTHER,
        "{}",
        first.status()
    );
    let refreshed = tokens().await?;
    ensure!(
        refreshed.0 != signed_in.0 && refreshed.1 != signed_in.1,
        "the write refreshed the tokens first"
    );

    let writes = ["🚀", "🧠", "🌈", "💙", "😉"].map(|emoji| {
        let mut browser = browser.clone();
        tokio::spawn(async move {
            let response = browser.post("/status", &[("status", emoji)], None).await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, anyhow::Error>((status, text))
        })
    });
    for write in writes {
        let (status, text) = write.await??;
        ensure!(
            status == StatusCode::SEE_OTHER,
            "a concurrent write answered {status}: {text}"
        );
    }
    ensure!(
        pds::repo_statuses(&net.devnet.pds_url, &ivan).await?.len() == 6,
        "every write is in the repo"
    );
    let last = tokens().await?;
    ensure!(last.1 != refreshed.1, "refreshed again since");
    Ok(())
}
