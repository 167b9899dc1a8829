//! Attacks on edge from the open network, each run against the real stack: a hostile PDS and
//! authorization server (`e2e::hostile`, a `did:web` account anyone could run) that lies in its
//! answers, and a stranger who hands a victim the callback URL of their own sign-in. docs/security.md
//! lists what each proves.

use anyhow::{ensure, Context, Result};
use std::time::{Duration, Instant};

use e2e::hostile::{tid, Hostile, Misbehaviour};
use e2e::pds::Answer;
use e2e::tables::Tables;
use e2e::web::{did_of, location, page_text, start_with_replay, Browser, Net};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The handle a hostile identity event claims for heidi.
const CLAIMED: &str = "jay.bsky.team";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_network_is_hostile() -> Result<()> {
    // The listener reads a replay in which heidi (a real account of the local network) writes a
    // status, and then an identity event claims a handle for him that is not his.
    let claimed_at_us = std::cell::Cell::new(0);
    let net = tokio::task::block_in_place(|| {
        start_with_replay("edge-attacks", |devnet| {
            let heidi = did_of(devnet, "heidi");
            let now_us = e2e::now_ms() * 1000;
            claimed_at_us.set(now_us - 9_000_000);
            bob_and_a_false_claim(&heidi, now_us - 10_000_000, now_us - 9_000_000)
        })
    })?;
    let result = async {
        identity_claims(&net, claimed_at_us.get())
            .await
            .context("a handle claimed by an identity event")?;
        lying_pds(&net).await.context("a lying PDS")?;
        login_csrf(&net).await.context("login CSRF")?;
        servers_that_never_finish(&net)
            .await
            .context("servers that never finish")?;
        refresh_failures(&net).await.context("refresh failures")?;
        failing_then_back(&net)
            .await
            .context("a PDS failing, then back")?;
        d1_fails_after_the_pds_wrote(&net)
            .await
            .context("D1 failing after the PDS wrote")
    }
    .await;
    net.with_log(result)
}

/// Jetstream frames: heidi creates a status at `status_us`, then an identity event at `claim_us`
/// claims [`CLAIMED`] as his handle.
fn bob_and_a_false_claim(heidi: &str, status_us: i64, claim_us: i64) -> Vec<String> {
    let rkey = tid(status_us, 3);
    let record = json!({"$type": "xyz.statusphere.status", "status": "🎭",
                        "createdAt": "2026-12-01T00:00:00.000Z"});
    vec![
        json!({"did": heidi, "time_us": status_us, "kind": "commit",
               "commit": {"rev": rkey, "operation": "create", "collection": "xyz.statusphere.status",
                          "rkey": rkey, "record": record, "cid": e2e::hostile::cid_of(&record)}})
        .to_string(),
        json!({"did": heidi, "time_us": claim_us, "kind": "identity",
               "identity": {"did": heidi, "handle": CLAIMED, "seq": 7, "time": "2026-12-01T00:00:00.000Z"}})
        .to_string(),
    ]
}

/// An identity event's handle is a claim: the page shows heidi's DID until the background lookup
/// has verified his real handle both ways, and never the claimed one.
async fn identity_claims(net: &Net, claimed_at_us: i64) -> Result<()> {
    let mut browser = Browser::new(&net.stack);
    // The first request wakes the listener, which reads the replay.
    browser.page().await?;
    e2e::listening::wait_for_cursor(&net.stack, claimed_at_us, Duration::from_secs(60)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Each page that shows a DID starts a verified lookup of it in the background.
        let text = page_text(&browser.page().await?);
        ensure!(
            !text.contains(CLAIMED),
            "the claimed handle is shown: {text}"
        );
        if text.contains("@heidi.test is feeling 🎭 today") {
            break;
        }
        ensure!(
            text.contains("is feeling 🎭 today"),
            "heidi's status is missing: {text}"
        );
        ensure!(
            Instant::now() < deadline,
            "heidi's verified handle never came: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tables = Tables::of_stack(&net.stack.config().persist_dir).await?;
    ensure!(
        tables.account.iter().all(|a| a["handle"] != CLAIMED),
        "the claim reached D1: {:?}",
        tables.account
    );
    Ok(())
}

/// How the hostile server changes an honest createRecord answer.
type Lie = Box<dyn Fn(&mut Value) + Send + Sync>;

/// The statuses D1 holds for `did`: `(uri, status)`, tombstones included.
async fn rows_of(net: &Net, did: &str) -> Result<Vec<(String, String)>> {
    let tables = Tables::of_stack(&net.stack.config().persist_dir).await?;
    Ok(tables
        .status
        .iter()
        .filter(|row| row["author_did"] == did)
        .map(|row| {
            (
                row["uri"].as_str().unwrap_or_default().to_owned(),
                row["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Signs `browser` in at the hostile server by its DID (its authorization endpoint consents at
/// once); returns the callback's response.
async fn sign_in_at(browser: &mut Browser, hostile: &Hostile) -> Result<reqwest::Response> {
    let started = browser
        .post("/login", &[("handle", &hostile.did)], None)
        .await?;
    ensure!(
        started.status() == StatusCode::SEE_OTHER,
        "login at the hostile server answered {}: {}",
        started.status(),
        started.text().await?
    );
    let authorize = location(&started)?;
    ensure!(authorize.starts_with(&hostile.url), "{authorize}");
    let consented = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .get(&authorize)
        .send()
        .await?;
    ensure!(consented.status() == StatusCode::SEE_OTHER);
    browser.get(&location(&consented)?).await
}

/// A self-hosted PDS answers `createRecord` with someone else's record (and other lies): the
/// write is refused with a message, nothing reaches D1, and the victim's row is untouched and
/// still takes their own later writes.
async fn lying_pds(net: &Net) -> Result<()> {
    let grace = did_of(&net.devnet, "grace");
    // The attacker's DID document claims grace's handle too.
    let hostile = Hostile::start("grace.test").await?;
    let mut victim = Browser::new(&net.stack);
    victim.sign_in_as("grace").await?;
    let written = victim.post("/status", &[("status", "🦋")], None).await?;
    ensure!(written.status() == StatusCode::SEE_OTHER);
    let victims = rows_of(net, &grace).await?;
    ensure!(victims.len() == 1, "{victims:?}");
    let victim_uri = victims[0].0.clone();

    let mut attacker = Browser::new(&net.stack);
    let signed_in = sign_in_at(&mut attacker, &hostile).await?;
    ensure!(
        signed_in.status() == StatusCode::SEE_OTHER,
        "signing in at the hostile server answered {}: {}",
        signed_in.status(),
        signed_in.text().await?
    );
    let page = attacker.page().await?;
    ensure!(
        page.contains("Signed in as") && !page_text(&page).contains("Signed in as grace.test"),
        "a handle that does not resolve back to the DID is not shown: {page}"
    );

    // The server is a working PDS: an honest answer is recorded (so the refusals below are the
    // checks at work, not a broken server).
    let honest = attacker.post("/status", &[("status", "🙂")], None).await?;
    ensure!(
        honest.status() == StatusCode::SEE_OTHER,
        "an honest write answered {}: {}",
        honest.status(),
        honest.text().await?
    );
    ensure!(rows_of(net, &hostile.did).await?.len() == 1);

    let far_future_rev = tid((e2e::now_ms() + 86_400_000) * 1000, 1);
    let lies: Vec<(&str, Lie)> = vec![
        ("the victim's uri with a huge rev", {
            let uri = victim_uri.clone();
            Box::new(move |answer: &mut Value| {
                answer["uri"] = json!(uri);
                answer["commit"]["rev"] = json!("jzzzzzzzzzzzz");
            })
        }),
        ("the victim's uri", {
            let uri = victim_uri.clone();
            Box::new(move |answer: &mut Value| answer["uri"] = json!(uri))
        }),
        (
            "another collection",
            Box::new(|answer: &mut Value| {
                let uri = answer["uri"].as_str().unwrap_or_default();
                answer["uri"] = json!(uri.replace("xyz.statusphere.status", "app.bsky.feed.post"));
            }),
        ),
        (
            "a record key that is not a TID",
            Box::new(|answer: &mut Value| {
                let uri = answer["uri"].as_str().unwrap_or_default();
                let (head, _) = uri.rsplit_once('/').unwrap_or_default();
                answer["uri"] = json!(format!("{head}/self"));
            }),
        ),
        (
            "a CID that does not parse",
            Box::new(|answer: &mut Value| answer["cid"] = json!("bafy-not-a-cid")),
        ),
        (
            "a rev that is not a TID",
            Box::new(|answer: &mut Value| answer["commit"]["rev"] = json!("not-a-tid")),
        ),
        ("a rev from tomorrow", {
            let rev = far_future_rev.clone();
            Box::new(move |answer: &mut Value| answer["commit"]["rev"] = json!(rev))
        }),
        (
            "no commit",
            Box::new(|answer: &mut Value| {
                answer.as_object_mut().map(|a| a.remove("commit"));
            }),
        ),
    ];
    for (lie, edit) in lies {
        hostile.answer_creates_with(edit);
        let refused = attacker
            .post_from_script("/status", &[("status", "💀")])
            .await?;
        let status = refused.status();
        let body: Value = refused.json().await.unwrap_or(Value::Null);
        ensure!(
            status == StatusCode::BAD_GATEWAY,
            "{lie}: answered {status}: {body}"
        );
        let message = body["error"].as_str().unwrap_or_default();
        ensure!(
            message.contains("Your server") && message.to_lowercase().contains("nothing"),
            "{lie}: {message}"
        );
        ensure!(
            rows_of(net, &hostile.did).await?.len() == 1,
            "{lie}: a row was written"
        );
        ensure!(
            rows_of(net, &grace).await? == vec![(victim_uri.clone(), "🦋".to_owned())],
            "{lie}: the victim's row changed"
        );
    }
    hostile.answer_creates_honestly();
    ensure!(
        hostile.records().len() >= 9,
        "every lie followed a real write"
    );

    // The victim's own next write still lands (no forged revision holds it back), and the page
    // shows the victim's status as theirs.
    let again = victim.post("/status", &[("status", "🚀")], None).await?;
    ensure!(again.status() == StatusCode::SEE_OTHER);
    ensure!(rows_of(net, &grace).await?.len() == 2);
    let page = victim.page().await?;
    ensure!(
        page_text(&page).contains("is feeling 🚀 today")
            && !page_text(&page).contains("feeling 💀"),
        "{page}"
    );
    Ok(())
}

/// A stranger starts a sign-in as themselves and hands the victim the callback URL: the victim's
/// browser is not signed in as the stranger (RFC 9700 §4.7.1), while the stranger's own browser
/// still finishes, and the victim's own sign-in is unaffected.
async fn login_csrf(net: &Net) -> Result<()> {
    let mut stranger = Browser::new(&net.stack);
    let callback = stranger
        .callback_url("heidi.test", "heidi", Answer::Consent)
        .await?;
    ensure!(stranger.sign_in_cookie.is_some(), "no sign-in binding set");
    // What a sign-in in progress keeps (PKCE verifier, DPoP private key) is sealed at rest.
    let pending = Tables::oauth_states(&net.stack).await?;
    ensure!(!pending.is_empty(), "no sign-in in progress in D1");
    for data in &pending {
        ensure!(
            data.starts_with("v1.local.") && !data.contains("verifier") && !data.contains("dpop"),
            "a sign-in in progress is readable in D1: {data:.80}"
        );
    }

    // A victim with no sign-in of their own.
    let mut victim = Browser::new(&net.stack);
    let followed = victim.get(&callback).await?;
    ensure!(
        followed.status() == StatusCode::BAD_REQUEST,
        "the stranger's callback in the victim's browser answered {}",
        followed.status()
    );
    ensure!(followed.text().await?.contains("another browser"));
    ensure!(victim.cookie.is_none(), "the victim got a session");
    ensure!(victim.page().await?.contains("action=\"/login\""));

    // A victim in the middle of a sign-in of their own (a binding cookie of their own).
    let mut busy = Browser::new(&net.stack);
    let own_callback = busy
        .callback_url("grace.test", "grace", Answer::Consent)
        .await?;
    let followed = busy.get(&callback).await?;
    ensure!(
        followed.status() == StatusCode::BAD_REQUEST && busy.cookie.is_none(),
        "a victim with a binding of their own answered {}",
        followed.status()
    );
    // The stranger's sign-in was spent by that try; the busy victim's own still finishes.
    let finished = busy.get(&own_callback).await?;
    ensure!(
        finished.status() == StatusCode::SEE_OTHER && busy.cookie.is_some(),
        "the victim's own sign-in answered {}",
        finished.status()
    );
    ensure!(
        busy.sign_in_cookie.is_none(),
        "the binding is cleared once used"
    );
    ensure!(page_text(&busy.page().await?).contains("Signed in as grace.test"));

    // A fresh sign-in by the stranger finishes in the stranger's own browser.
    let own = stranger
        .sign_in("heidi.test", "heidi", Answer::Consent)
        .await?;
    ensure!(
        own.status() == StatusCode::SEE_OTHER && stranger.cookie.is_some(),
        "the stranger's own callback answered {}",
        own.status()
    );
    Ok(())
}

/// Longer than edge may take for anything: its fetches stop at their 5 s deadline.
const PATIENCE: Duration = Duration::from_secs(30);

/// A hostile server answers without end, by the byte, at a huge declared length, not at all, or
/// with a redirect: each sign-in or write ends with a clear error well within the deadline, nothing
/// is written, and edge goes on serving.
async fn servers_that_never_finish(net: &Net) -> Result<()> {
    let hostile = Hostile::start("mallory.test").await?;
    let mut browser = Browser::new(&net.stack);
    let did_document = "/.well-known/did.json";
    for how in [
        Misbehaviour::Endless,
        Misbehaviour::HugeLength,
        Misbehaviour::Trickle,
        Misbehaviour::Silent,
        Misbehaviour::Redirect(format!("{}/.well-known/did.json", net.devnet.pds_url)),
    ] {
        hostile.misbehave(did_document, Some(how.clone()));
        let started = Instant::now();
        let answer = tokio::time::timeout(
            PATIENCE,
            browser.post("/login", &[("handle", &hostile.did)], None),
        )
        .await
        .with_context(|| format!("{how:?}: edge still waits after {PATIENCE:?}"))??;
        let (status, body) = (answer.status(), answer.text().await?);
        ensure!(
            status == StatusCode::BAD_REQUEST && body.contains("could not be found"),
            "{how:?}: sign-in answered {status}: {body:.300}"
        );
        eprintln!(
            "{how:?} at the DID document: {status} after {:?}",
            started.elapsed()
        );
    }
    hostile.misbehave(did_document, None);

    let signed_in = sign_in_at(&mut browser, &hostile).await?;
    ensure!(signed_in.status() == StatusCode::SEE_OTHER);
    let create = "/xrpc/com.atproto.repo.createRecord";
    for how in [
        Misbehaviour::Endless,
        Misbehaviour::Trickle,
        Misbehaviour::Silent,
    ] {
        hostile.misbehave(create, Some(how.clone()));
        let started = Instant::now();
        let answer = tokio::time::timeout(
            PATIENCE,
            browser.post_from_script("/status", &[("status", "🐌")]),
        )
        .await
        .with_context(|| format!("{how:?}: edge still waits after {PATIENCE:?}"))??;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        ensure!(
            status == StatusCode::BAD_GATEWAY
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("could not be reached")),
            "{how:?}: the write answered {status}: {body}"
        );
        eprintln!(
            "{how:?} at createRecord: {status} after {:?}",
            started.elapsed()
        );
    }
    hostile.misbehave(create, None);
    ensure!(
        rows_of(net, &hostile.did).await?.is_empty(),
        "nothing is written when the PDS never finished answering"
    );
    let page = browser.get("/").await?;
    ensure!(page.status() == StatusCode::OK, "edge still serves");
    Ok(())
}

/// A PDS answering 5xx, to a sign-in (its PAR endpoint) and to a write (createRecord): each gets
/// a clear message, nothing is signed in or written; once the server is back, the same sign-in
/// and the same write go through.
async fn failing_then_back(net: &Net) -> Result<()> {
    let hostile = Hostile::start("walter.test").await?;
    let mut browser = Browser::new(&net.stack);
    for status in [500, 502, 503] {
        hostile.misbehave("/oauth/par", Some(Misbehaviour::Status(status)));
        let answer = browser
            .post("/login", &[("handle", &hostile.did)], None)
            .await?;
        let (code, body) = (answer.status(), answer.text().await?);
        ensure!(
            code == StatusCode::BAD_GATEWAY
                && page_text(&body).contains("Your server could not complete the sign-in"),
            "PAR {status}: the sign-in answered {code}: {}",
            page_text(&body)
        );
        ensure!(browser.cookie.is_none(), "PAR {status}: signed in anyway");
    }
    hostile.misbehave("/oauth/par", None);
    let signed_in = sign_in_at(&mut browser, &hostile).await?;
    ensure!(
        signed_in.status() == StatusCode::SEE_OTHER,
        "the sign-in after the PDS came back"
    );

    let create = "/xrpc/com.atproto.repo.createRecord";
    for status in [500, 503] {
        hostile.misbehave(create, Some(Misbehaviour::Status(status)));
        let answer = browser
            .post_from_script("/status", &[("status", "🌧")])
            .await?;
        let code = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        ensure!(
            code == StatusCode::BAD_GATEWAY
                && body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "createRecord {status}: the write answered {code}: {body}"
        );
    }
    ensure!(
        rows_of(net, &hostile.did).await?.is_empty(),
        "nothing is written while the PDS fails"
    );
    hostile.misbehave(create, None);
    let answer = browser
        .post_from_script("/status", &[("status", "🌤")])
        .await?;
    ensure!(
        answer.status() == StatusCode::OK,
        "the write after the PDS came back: {}",
        answer.status()
    );
    let rows = rows_of(net, &hostile.did).await?;
    ensure!(
        rows.len() == 1 && rows[0].1 == "🌤",
        "one status once the PDS is back: {rows:?}"
    );
    Ok(())
}

/// The token endpoint is busy (429), failing (503) or silent when a write needs a refresh: the
/// write is refused with "try again", the session survives (its refresh token was not spent),
/// and the next write refreshes and lands. Only `invalid_grant` ends the session.
async fn refresh_failures(net: &Net) -> Result<()> {
    let hostile = Hostile::start("carol.test").await?;
    // Tokens that expire at once: every write refreshes first.
    hostile.set_token_lifetime(1);
    let mut browser = Browser::new(&net.stack);
    ensure!(sign_in_at(&mut browser, &hostile).await?.status() == StatusCode::SEE_OTHER);
    let write = |browser: &mut Browser| {
        let mut browser = browser.clone();
        async move {
            let answer = tokio::time::timeout(
                PATIENCE,
                browser.post_from_script("/status", &[("status", "🔁")]),
            )
            .await
            .context("the write never finished")??;
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            anyhow::Ok((status, body))
        }
    };
    let (status, body) = write(&mut browser).await?;
    ensure!(
        status == StatusCode::OK,
        "the first write answered {status}: {body}"
    );
    let token = "/oauth/token";
    for how in [
        Misbehaviour::Status(429),
        Misbehaviour::Status(503),
        Misbehaviour::Silent,
    ] {
        hostile.misbehave(token, Some(how.clone()));
        let (status, body) = write(&mut browser).await?;
        ensure!(
            status == StatusCode::BAD_GATEWAY
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("try again")),
            "{how:?}: the write answered {status}: {body}"
        );
        ensure!(
            page_text(&browser.page().await?).contains("Signed in as"),
            "{how:?}: the session ended"
        );
    }
    hostile.misbehave(token, None);
    let (status, body) = write(&mut browser).await?;
    ensure!(
        status == StatusCode::OK,
        "after the server recovered the write answered {status}: {body}"
    );
    // A refusal of the grant itself ends the session.
    hostile.forget_refresh_tokens();
    let (status, body) = write(&mut browser).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "a refused grant answered {status}: {body}"
    );
    Ok(())
}

/// D1 refuses the row after the person's PDS accepted the record: the write is reported as
/// written (202, "this page will catch up"), not as failed, so nobody is invited to write a
/// duplicate; nothing half-done is in D1; once D1 works again the next write lands whole.
async fn d1_fails_after_the_pds_wrote(net: &Net) -> Result<()> {
    let hostile = Hostile::start("dave.test").await?;
    let mut browser = Browser::new(&net.stack);
    ensure!(sign_in_at(&mut browser, &hostile).await?.status() == StatusCode::SEE_OTHER);
    let did = hostile.did.clone();
    // A real D1 failure: the local database refuses every new status row.
    Tables::execute(
        &net.stack,
        "CREATE TRIGGER test_refuse_status BEFORE INSERT ON status \
         BEGIN SELECT RAISE(ABORT, 'injected by the test'); END",
    )
    .await?;
    let answer = browser
        .post_from_script("/status", &[("status", "🧯")])
        .await;
    let dropped = Tables::execute(&net.stack, "DROP TRIGGER test_refuse_status").await;
    let answer = answer?;
    dropped?;
    let status = answer.status();
    let body: Value = answer.json().await?;
    ensure!(
        status == StatusCode::ACCEPTED
            && body["status"].is_null()
            && body["notice"]
                .as_str()
                .is_some_and(|n| n.contains("written to your repository")),
        "the write answered {status}: {body}"
    );
    let written = hostile.records();
    ensure!(
        written.len() == 1 && written[0].2["status"] == "🧯",
        "the PDS holds {written:?}"
    );
    ensure!(
        rows_of(net, &did).await?.is_empty(),
        "D1 holds a row for dave"
    );
    // D1 is back: the next write is recorded, the first one is not invented.
    let answer = browser
        .post_from_script("/status", &[("status", "🚒")])
        .await?;
    ensure!(
        answer.status() == StatusCode::OK,
        "then {}",
        answer.status()
    );
    let rows = rows_of(net, &did).await?;
    ensure!(
        rows.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>() == ["🚒"],
        "D1 holds {rows:?}"
    );
    Ok(())
}
