//! Production identity resolution (`oauth::identity`), end to end over the protocols it speaks in
//! production: handle -> DID by DNS TXT through DNS-over-HTTPS (Cloudflare's JSON API) and by
//! `https://<handle>/.well-known/atproto-did`, DID -> document from did:web over HTTPS and from a
//! PLC directory (the local network's real one), the bidirectional checks, each step's failure,
//! and the cache (`oauth::cache`). The public names are `e2e::names`: a server on 127.0.0.1 with
//! a certificate from a CA made for the run, reached by name as a worker reaches the internet,
//! with production's rules (`Reach::Public`: https only, public names only).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use anyhow::{ensure, Context, Result};
use e2e::names::{Names, Reply, DOH_HOST};
use e2e::pds::Reqwest;
use lexicon::syntax::{Did, Handle};
use oauth::cache::{CacheStore, Cached, Entry};
use oauth::identity::{self, HandleResolution, IdentityConfig, LoginInput};
use oauth::Reach;

const PDS: &str = "https://pds.example.com";
const WELL_KNOWN: &str = "/.well-known/atproto-did";
const DID_JSON: &str = "/.well-known/did.json";

/// Production's settings, with the test network's DNS-over-HTTPS service.
fn public(names: &Names) -> IdentityConfig {
    IdentityConfig {
        plc_url: "https://plc.example.com".into(),
        handles: HandleResolution::Dns {
            doh_url: names.doh_url(),
        },
        reach: Reach::Public,
    }
}

fn did_web(host: &str) -> String {
    format!("did:web:{host}")
}

/// A did:web document for `host` claiming `handle`, its PDS at `pds`.
fn document(id: &str, handle: &str, pds: &str) -> String {
    serde_json::json!({
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": id,
        "alsoKnownAs": [format!("at://{handle}")],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": pds}],
    })
    .to_string()
}

/// An account `name.example.com` whose DID is `did:web:name.example.com`, whose document names
/// the handle back, found by DNS (`by_dns`) or by its well-known file.
fn account(names: &Names, name: &str, by_dns: bool) -> String {
    let host = format!("{name}.example.com");
    let did = did_web(&host);
    names.serve(&host, DID_JSON, Reply::Body(document(&did, &host, PDS)));
    if by_dns {
        names.set_txt(&format!("_atproto.{host}"), &[&format!("did={did}")]);
    } else {
        names.serve(&host, WELL_KNOWN, Reply::Body(format!("{did}\n")));
    }
    host
}

fn handle(text: &str) -> LoginInput {
    LoginInput::Handle(Handle::new(text.to_owned()).expect("a handle"))
}

async fn resolve(
    http: &impl atrium_xrpc::HttpClient,
    config: &IdentityConfig,
    input: &LoginInput,
) -> std::result::Result<identity::Identity, String> {
    identity::resolve(http, config, input)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_resolve_over_dns_and_well_known_and_documents_name_them_back() -> Result<()> {
    let names = Names::start().await?;
    let carol = account(&names, "carol", true);
    let dave = account(&names, "dave", false);
    let http = names.client(&[&carol, &dave])?;
    let config = public(&names);

    let found = resolve(&http, &config, &handle(&carol))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(found.did == did_web(&carol) && found.handle.as_deref() == Some(carol.as_str()));
    ensure!(found.pds == PDS, "{found:?}");
    ensure!(
        names.hits(&carol, WELL_KNOWN) == 0,
        "DNS answered: no well-known asked"
    );
    ensure!(names.hits(DOH_HOST, "/dns-query") == 1);

    // No TXT record (NXDOMAIN): the well-known file answers.
    let found = resolve(&http, &config, &handle(&dave))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(found.did == did_web(&dave), "{found:?}");
    ensure!(names.hits(&dave, WELL_KNOWN) == 1);

    // The DNS service down: the well-known path still works.
    names.fail_dns(Some(503));
    ensure!(resolve(&http, &config, &handle(&dave)).await.is_ok());
    names.fail_dns(None);

    // Signing in by DID: the document's handle is kept because it resolves back.
    let by_did = LoginInput::Did(Did::new(did_web(&carol)).map_err(anyhow::Error::msg)?);
    let found = resolve(&http, &config, &by_did)
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(found.handle.as_deref() == Some(carol.as_str()), "{found:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_that_fails_says_so() -> Result<()> {
    let names = Names::start().await?;
    let hosts: Vec<String> = [
        "nobody", "twice", "garbage", "imposter", "liar", "nopds", "plain", "gina", "ursula",
    ]
    .iter()
    .map(|n| format!("{n}.example.com"))
    .collect();
    let mut reachable: Vec<&str> = hosts.iter().map(String::as_str).collect();
    // A name the test certificate does not cover: its TLS handshake fails.
    reachable.push("frank.example.org");
    let http = names.client(&reachable)?;
    let config = public(&names);
    let host = |n: &str| format!("{n}.example.com");

    // Neither DNS nor a well-known file.
    let mut cases: Vec<(String, LoginInput, &str)> = vec![(
        "nothing anywhere".into(),
        handle(&host("nobody")),
        "does not resolve",
    )];
    // Two different DIDs in DNS.
    names.set_txt(
        "_atproto.twice.example.com",
        &["did=did:web:a.example.com", "did=did:web:b.example.com"],
    );
    cases.push((
        "two DIDs".into(),
        handle(&host("twice")),
        "conflicting DNS records",
    ));
    // A well-known file that is not a DID.
    names.serve(
        &host("garbage"),
        WELL_KNOWN,
        Reply::Body("<html>hello</html>".into()),
    );
    cases.push(("not a DID".into(), handle(&host("garbage")), "not a DID"));
    // A document that is another DID's.
    names.set_txt(
        "_atproto.imposter.example.com",
        &["did=did:web:imposter.example.com"],
    );
    names.serve(
        &host("imposter"),
        DID_JSON,
        Reply::Body(document(
            "did:web:victim.example.com",
            &host("imposter"),
            PDS,
        )),
    );
    cases.push((
        "another DID's document".into(),
        handle(&host("imposter")),
        "names another DID",
    ));
    // DNS says liar's DID, whose document claims another handle: not bidirectional.
    names.set_txt(
        "_atproto.liar.example.com",
        &["did=did:web:liar.example.com"],
    );
    names.serve(
        &host("liar"),
        DID_JSON,
        Reply::Body(document(
            "did:web:liar.example.com",
            "someone.example.com",
            PDS,
        )),
    );
    cases.push((
        "one-way".into(),
        handle(&host("liar")),
        "do not confirm each other",
    ));
    // No PDS in the document; a PDS over plain http (production fetches https only).
    for (name, pds) in [("nopds", ""), ("plain", "http://pds.example.com")] {
        let did = did_web(&host(name));
        names.set_txt(
            &format!("_atproto.{}", host(name)),
            &[&format!("did={did}")],
        );
        let mut doc: serde_json::Value = serde_json::from_str(&document(&did, &host(name), pds))?;
        if pds.is_empty() {
            doc["service"] = serde_json::json!([]);
        }
        names.serve(&host(name), DID_JSON, Reply::Body(doc.to_string()));
    }
    cases.push(("no PDS".into(), handle(&host("nopds")), "names no PDS"));
    cases.push((
        "plain-http PDS".into(),
        handle(&host("plain")),
        "only https",
    ));
    // The DID document's server down.
    names.set_txt(
        "_atproto.ursula.example.com",
        &["did=did:web:ursula.example.com"],
    );
    names.serve(&host("ursula"), DID_JSON, Reply::Status(503));
    cases.push((
        "document unavailable".into(),
        handle(&host("ursula")),
        "could not be found",
    ));
    // A well-known file behind a certificate for another name.
    names.serve(
        "frank.example.org",
        WELL_KNOWN,
        Reply::Body("did:web:frank.example.org".into()),
    );
    cases.push((
        "untrusted certificate".into(),
        handle("frank.example.org"),
        "does not resolve",
    ));
    // did:web with a path (atproto allows host-level did:web only).
    cases.push((
        "did:web with a path".into(),
        LoginInput::Did(
            Did::new("did:web:example.com:users:x".into()).map_err(anyhow::Error::msg)?,
        ),
        "with a path",
    ));
    for (what, input, expected) in &cases {
        match resolve(&http, &config, input).await {
            Err(message) => ensure!(message.contains(expected), "{what}: {message}"),
            Ok(found) => anyhow::bail!("{what}: resolved to {found:?}"),
        }
    }
    ensure!(
        names.hits("frank.example.org", WELL_KNOWN) == 0,
        "a request crossed a handshake that failed"
    );

    // By DID, a handle that does not resolve back is dropped, not believed.
    names.serve(
        &host("gina"),
        DID_JSON,
        Reply::Body(document("did:web:gina.example.com", &host("gina"), PDS)),
    );
    names.set_txt(
        "_atproto.gina.example.com",
        &["did=did:web:other.example.com"],
    );
    let by_did =
        LoginInput::Did(Did::new("did:web:gina.example.com".into()).map_err(anyhow::Error::msg)?);
    let found = resolve(&http, &config, &by_did)
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(found.handle.is_none(), "{found:?}");
    Ok(())
}

/// did:plc documents come from the PLC directory (the local network's, holding the real
/// documents of its accounts); their handles are checked against DNS the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn did_plc_documents_come_from_the_plc_directory() -> Result<()> {
    let devnet = e2e::shared::devnet()?;
    let names = Names::start().await?;
    let did_of = |name: &str| {
        devnet
            .accounts
            .iter()
            .find(|a| a.handle == format!("{name}.test"))
            .map(|a| a.did.clone())
            .context("a seeded account")
    };
    let (liam, mia) = (did_of("liam")?, did_of("mia")?);
    names.set_txt("_atproto.liam.test", &[&format!("did={liam}")]);
    // mia's name pointed at liam's DID: liam's document names liam.test, not mia.test.
    names.set_txt("_atproto.mia.test", &[&format!("did={liam}")]);
    // A local network: plain http to the PLC and the DNS service, `.test` handles.
    let config = IdentityConfig {
        plc_url: devnet.plc_url.clone(),
        handles: HandleResolution::Dns {
            doh_url: names.doh_http_url(),
        },
        reach: Reach::Local,
    };
    let http = Reqwest::default();
    let found = resolve(&http, &config, &handle("liam.test"))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        found.did == liam && found.pds == devnet.pds_url.trim_end_matches('/'),
        "{found:?}"
    );
    let refused = resolve(&http, &config, &handle("mia.test")).await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|m| m.contains("do not confirm each other")),
        "{refused:?} ({mia})"
    );
    Ok(())
}

/// A store in memory whose clock the test moves.
#[derive(Default)]
struct Memory {
    now_s: AtomicI64,
    entries: Mutex<HashMap<String, (Entry, i64)>>,
}

impl CacheStore for Memory {
    async fn get(&self, key: &str) -> Option<Entry> {
        let now = self.now_s.load(Ordering::SeqCst);
        let entries = self.entries.lock().unwrap();
        entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(entry, _)| entry.clone())
    }

    async fn put(&self, key: &str, entry: &Entry, ttl_s: u32) {
        let expires = self.now_s.load(Ordering::SeqCst) + i64::from(ttl_s);
        self.entries
            .lock()
            .unwrap()
            .insert(key.to_owned(), (entry.clone(), expires));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_repeats_until_they_expire_and_keeps_no_failure() -> Result<()> {
    let names = Names::start().await?;
    let carol = account(&names, "carol", true);
    let dave = account(&names, "dave", false);
    let cached = Cached {
        inner: names.client(&[&carol, &dave, "elsewhere.example.com"])?,
        store: Memory::default(),
    };
    let config = public(&names);
    let dns = || names.hits(DOH_HOST, "/dns-query");
    for _ in 0..3 {
        resolve(&cached, &config, &handle(&carol))
            .await
            .map_err(anyhow::Error::msg)?;
    }
    ensure!(
        dns() == 1 && names.hits(&carol, DID_JSON) == 1,
        "repeats were fetched again"
    );

    // DNS answers are kept a minute, documents five.
    cached.store.now_s.store(61, Ordering::SeqCst);
    resolve(&cached, &config, &handle(&carol))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(dns() == 2 && names.hits(&carol, DID_JSON) == 1);
    cached.store.now_s.store(301, Ordering::SeqCst);
    resolve(&cached, &config, &handle(&carol))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(dns() == 3 && names.hits(&carol, DID_JSON) == 2);

    // A failure is not kept: the next try asks again, and succeeds once the server is back.
    names.serve(&dave, WELL_KNOWN, Reply::Status(503));
    ensure!(resolve(&cached, &config, &handle(&dave)).await.is_err());
    names.serve(&dave, WELL_KNOWN, Reply::Body(did_web(&dave)));
    resolve(&cached, &config, &handle(&dave))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(names.hits(&dave, WELL_KNOWN) == 2);
    // A re-pointed handle is seen once its cached answers expire, not before.
    let moved = did_web("elsewhere.example.com");
    names.set_txt(&format!("_atproto.{carol}"), &[&format!("did={moved}")]);
    let stale = resolve(&cached, &config, &handle(&carol))
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(stale.did == did_web(&carol));
    cached.store.now_s.store(362, Ordering::SeqCst);
    let fresh = resolve(&cached, &config, &handle(&carol)).await;
    ensure!(fresh.is_err(), "the new DID has no document: {fresh:?}");
    Ok(())
}
