//! The `oauth` crate natively against a real local PDS (`@atproto/dev-env`): a person signs in by
//! handle, by DID and at their server's URL; the session writes to their repo with DPoP; refresh
//! tokens are single-use; revocation ends the grant; and every callback that must fail, fails:
//! refused consent, a state from another sign-in, a wrong `iss`, another account than the one
//! named, a replayed code.

use std::sync::Arc;

use anyhow::{Context, Result};
use e2e::pds::{self, Answer, Reqwest};
use oauth::{
    Callback, Client, HandleResolution, IdentityConfig, OAuth, PdsClient, Pending, Reach, Session,
};
use serde_json::json;
use xtask::devnet::{Devnet, DEMO_PASSWORD};

const SCOPE: &str = "atproto repo:xyz.statusphere.status";
/// Never called: the test reads the redirect the PDS would send the browser to.
const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

fn now_s() -> i64 {
    e2e::now_ms() / 1000
}

struct Net {
    devnet: Arc<Devnet>,
    client: Client,
    http: Reqwest,
}

impl Net {
    fn start() -> Result<Net> {
        let devnet = e2e::shared::devnet()?;
        let identity = IdentityConfig {
            plc_url: devnet.plc_url.clone(),
            handles: HandleResolution::Service {
                url: devnet.pds_url.clone(),
            },
            reach: Reach::Local,
        };
        Ok(Net {
            client: Client::loopback(REDIRECT, SCOPE, identity),
            devnet,
            http: Reqwest::default(),
        })
    }

    fn oauth(&self) -> OAuth<'_, Reqwest> {
        OAuth {
            http: &self.http,
            client: &self.client,
            now_s: now_s(),
        }
    }

    fn did(&self, name: &str) -> String {
        let handle = format!("{name}.test");
        self.devnet
            .accounts
            .iter()
            .find(|a| a.handle == handle)
            .map(|a| a.did.clone())
            .expect("a seeded account")
    }

    /// authorize(input) -> the PDS's page -> signed in as `user` -> the callback's parameters.
    async fn approve(
        &self,
        input: &str,
        user: &str,
        answer: Answer,
    ) -> Result<(Callback, Pending)> {
        let (url, pending) = self.oauth().authorize(input).await?;
        let redirect = pds::authorize(&url, &format!("{user}.test"), DEMO_PASSWORD, answer).await?;
        let query = redirect
            .strip_prefix(&format!("{REDIRECT}?"))
            .with_context(|| format!("redirected elsewhere: {redirect}"))?;
        Ok((Callback::from_query(query), pending))
    }

    async fn sign_in(&self, input: &str, user: &str) -> Result<Session> {
        let (callback, pending) = self.approve(input, user, Answer::Consent).await?;
        Ok(self.oauth().callback(&callback, pending).await?)
    }
}

async fn write_status(net: &Net, session: &Session, emoji: &str) -> Result<String> {
    let client = PdsClient::new(&net.http, session, now_s());
    let record = json!({
        "$type": "xyz.statusphere.status",
        "status": emoji,
        "createdAt": "2026-11-24T12:00:00.000Z",
    });
    let created =
        account::xrpc::create_record(&client, &session.did, "xyz.statusphere.status", &record)
            .await?;
    Ok(created.uri)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_write_refresh_revoke_against_the_local_pds() -> Result<()> {
    let net = Net::start()?;
    let judy = net.did("judy");

    // By handle: the identity is resolved and verified both ways before anything is sent.
    let session = net.sign_in("judy.test", "judy").await?;
    assert_eq!(session.did, judy);
    assert_eq!(session.handle.as_deref(), Some("judy.test"));
    assert!(
        session.scope.split(' ').any(|s| s == "atproto"),
        "{}",
        session.scope
    );
    assert!(session.refresh_token.is_some());

    // The session writes to judy's repo through atrium's typed client, over DPoP.
    let uri = write_status(&net, &session, "🦋").await?;
    assert!(
        uri.starts_with(&format!("at://{judy}/xyz.statusphere.status/")),
        "{uri}"
    );
    assert_eq!(
        pds::repo_statuses(&net.devnet.pds_url, &judy).await?,
        vec!["🦋".to_owned()]
    );

    // Refresh: new tokens that work; the old refresh token is spent.
    let refreshed = net.oauth().refresh(&session).await?;
    assert_ne!(refreshed.access_token, session.access_token);
    assert_ne!(refreshed.refresh_token, session.refresh_token);
    write_status(&net, &refreshed, "🚀").await?;

    // An account whose PDS no longer names the session's server (it moved): refused before the
    // refresh token is spent, and the real session still refreshes afterwards.
    let mut moved = refreshed.clone();
    moved.server.issuer = "https://elsewhere.example".into();
    match net.oauth().refresh(&moved).await {
        Err(oauth::Error::Denied(why)) => assert!(why.contains("moved"), "{why}"),
        other => panic!("a moved account refreshed: {other:?}"),
    }
    let refreshed = net.oauth().refresh(&refreshed).await?;
    write_status(&net, &refreshed, "🧠").await?;

    // Replaying a spent refresh token fails (and the PDS then ends the whole grant).
    let replay = net.oauth().refresh(&session).await;
    assert!(replay.is_err(), "a refresh token is single-use");

    // Revoke: the grant ends; its refresh token no longer works.
    net.oauth().revoke(&refreshed).await?;
    let after = net.oauth().refresh(&refreshed).await;
    assert!(after.is_err(), "refresh after revoke must fail");

    // By DID, and at the server's URL (the account is chosen on the PDS's page).
    let by_did = net.sign_in(&judy, "judy").await?;
    assert_eq!(by_did.handle.as_deref(), Some("judy.test"));
    let ken = net.did("ken");
    let by_server = net.sign_in(&net.devnet.pds_url, "ken").await?;
    assert_eq!(by_server.did, ken);
    assert_eq!(by_server.handle.as_deref(), Some("ken.test"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_that_must_fail() -> Result<()> {
    let net = Net::start()?;

    // The person refuses.
    let (callback, pending) = net.approve("liam.test", "liam", Answer::Reject).await?;
    assert_eq!(callback.error.as_deref(), Some("access_denied"));
    let denied = net.oauth().callback(&callback, pending).await;
    assert!(matches!(denied, Err(oauth::Error::Denied(_))), "{denied:?}");

    // A state that belongs to another sign-in.
    let (callback, _) = net.approve("liam.test", "liam", Answer::Consent).await?;
    let (_, other) = net.oauth().authorize("liam.test").await?;
    let mixed = net.oauth().callback(&callback, other).await;
    assert!(
        matches!(&mixed, Err(oauth::Error::Callback(m)) if m.contains("another sign-in")),
        "{mixed:?}"
    );

    // An answer claiming another issuer, or none.
    for iss in [Some("http://localhost:1".to_owned()), None] {
        let (mut callback, pending) = net.approve("liam.test", "liam", Answer::Consent).await?;
        callback.iss = iss;
        let wrong = net.oauth().callback(&callback, pending).await;
        assert!(
            matches!(&wrong, Err(oauth::Error::Callback(m)) if m.contains("did not come from")),
            "{wrong:?}"
        );
    }

    // liam was named, mia signed in: the sub check refuses it.
    let (callback, pending) = net.approve("liam.test", "mia", Answer::Consent).await?;
    let swapped = net.oauth().callback(&callback, pending).await;
    assert!(
        matches!(swapped, Err(oauth::Error::Callback(_))),
        "{swapped:?}"
    );

    // A code is good once.
    let (callback, pending) = net.approve("liam.test", "liam", Answer::Consent).await?;
    net.oauth().callback(&callback, pending.clone()).await?;
    let replayed = net.oauth().callback(&callback, pending).await;
    assert!(
        matches!(replayed, Err(oauth::Error::Server { .. })),
        "{replayed:?}"
    );

    // A sign-in left too long.
    let (callback, mut pending) = net.approve("liam.test", "liam", Answer::Consent).await?;
    pending.created_at_s -= oauth::client::PENDING_TTL_S + 1;
    let late = net.oauth().callback(&callback, pending).await;
    assert!(
        matches!(&late, Err(oauth::Error::Callback(m)) if m.contains("too long")),
        "{late:?}"
    );

    // Names that do not resolve, or do not check out.
    for input in [
        "nobody.test",
        "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
        "not a handle",
        "https://10.0.0.1",
    ] {
        assert!(net.oauth().authorize(input).await.is_err(), "{input}");
    }
    Ok(())
}
