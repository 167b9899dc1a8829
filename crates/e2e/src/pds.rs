//! A person at their PDS's authorization page, without a browser: opens the page the app sent
//! them to, signs in, and consents or refuses through the OAuth provider's own JSON API, with the
//! headers a browser would send (docs/research/oauth.md §5). Also a reqwest transport for the
//! `oauth` crate, so the OAuth flows can be tested natively against the same PDS.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use xtask::devnet::DEMO_PASSWORD;

/// The OAuth provider's API prefix on the PDS.
const API: &str = "/@atproto/oauth-provider/~api";

/// Whether the person allows the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Consent,
    Reject,
}

/// A cookie jar by hand: the provider's cookies are `Secure`, which generic jars will not send
/// over plain http.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                self.0.retain(|(n, _)| n != name);
                self.0
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Follows `authorize_url` (the PDS's `/oauth/authorize?client_id&request_uri`), signs in as
/// `username`, answers, and returns the URL the PDS redirects the browser to (the app's redirect
/// URI with `code`/`error`, `state` and `iss`).
pub async fn authorize(
    authorize_url: &str,
    username: &str,
    password: &str,
    answer: Answer,
) -> Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = reqwest::Url::parse(authorize_url)?;
    let origin = page.origin().ascii_serialization();
    let request_uri = page
        .query_pairs()
        .find(|(k, _)| k == "request_uri")
        .map(|(_, v)| v.into_owned())
        .context("no request_uri in the authorize URL")?;
    let mut jar = Jar::default();
    let response = http
        .get(authorize_url)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-site", "cross-site")
        .header("accept", "text/html")
        .send()
        .await?;
    let status = response.status();
    jar.take(&response);
    let body = response.text().await.unwrap_or_default();
    ensure!(
        status == 200,
        "the authorize page answered {status}: {body:.300}"
    );
    let referer = format!(
        "{origin}/oauth/authorize?{}",
        url_query(&[("request_uri", &request_uri)])
    );
    let api = |jar: &Jar, path: &str, body: Value| {
        let csrf = jar.get("csrf-token").unwrap_or("").to_owned();
        http.post(format!("{origin}{API}{path}"))
            .header("content-type", "application/json")
            .header("sec-fetch-mode", "same-origin")
            .header("sec-fetch-site", "same-origin")
            .header("sec-fetch-dest", "empty")
            .header("origin", &origin)
            .header("referer", &referer)
            .header("x-csrf-token", csrf)
            .header("cookie", jar.header())
            .body(body.to_string())
    };
    let signed_in = api(
        &jar,
        "/sign-in",
        json!({ "locale": "en", "username": username, "password": password, "remember": true }),
    )
    .send()
    .await?;
    let status = signed_in.status();
    jar.take(&signed_in);
    let account: Value = signed_in.json().await.unwrap_or(Value::Null);
    ensure!(status == 200, "sign-in answered {status}: {account}");
    let did = account["account"]["sub"]
        .as_str()
        .or_else(|| account["account"]["did"].as_str())
        .with_context(|| format!("no account in the sign-in answer: {account}"))?
        .to_owned();
    let decided = match answer {
        Answer::Consent => api(&jar, "/consent", json!({ "did": did })),
        Answer::Reject => api(&jar, "/reject", json!({})),
    }
    .send()
    .await?;
    let status = decided.status();
    let body: Value = decided.json().await.unwrap_or(Value::Null);
    ensure!(status == 200, "{answer:?} answered {status}: {body}");
    let Some(url) = body["url"].as_str() else {
        bail!("no redirect URL in {body}");
    };
    redirect_target(url)
}

/// `<issuer>/oauth/authorize/redirect?redirect_uri=R&redirect_mode=query&code=…&state=…&iss=…`
/// -> `R?code=…&state=…&iss=…`: where the browser ends up.
pub fn redirect_target(url: &str) -> Result<String> {
    let url = reqwest::Url::parse(url)?;
    let mut redirect_uri = None;
    let mut params = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "redirect_uri" => redirect_uri = Some(v.into_owned()),
            "redirect_mode" => {}
            _ => params.push((k.into_owned(), v.into_owned())),
        }
    }
    let redirect_uri = redirect_uri.context("no redirect_uri")?;
    let pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(format!("{redirect_uri}?{}", url_query(&pairs)))
}

fn url_query(pairs: &[(&str, &str)]) -> String {
    let mut query = reqwest::Url::parse("http://x/").expect("a URL");
    query.query_pairs_mut().extend_pairs(pairs);
    query.query().unwrap_or("").to_owned()
}

/// The statuses in `did`'s repo on the PDS at `pds_url`, newest first (`listRecords`).
pub async fn repo_statuses(pds_url: &str, did: &str) -> Result<Vec<String>> {
    let url = format!(
        "{pds_url}/xrpc/com.atproto.repo.listRecords?repo={did}&collection=xyz.statusphere.status&limit=100"
    );
    let body: Value = reqwest::get(url).await?.json().await?;
    Ok(body["records"]
        .as_array()
        .context("no records in the listRecords answer")?
        .iter()
        .filter_map(|r| r["value"]["status"].as_str().map(str::to_owned))
        .collect())
}

/// Writes a record to `user`'s repo as any other atproto app could (a password session on the PDS,
/// then `createRecord`); returns the record's AT URI.
pub async fn write_record(
    pds_url: &str,
    user: &str,
    collection: &str,
    record: Value,
) -> Result<String> {
    put_record(pds_url, user, collection, None, record).await
}

/// [`write_record`] under the record key `rkey` (`putRecord`: created or replaced), or a new key.
pub async fn put_record(
    pds_url: &str,
    user: &str,
    collection: &str,
    rkey: Option<&str>,
    record: Value,
) -> Result<String> {
    Writer::sign_in(pds_url, user)
        .await?
        .put(collection, rkey, record)
        .await
}

/// The `oauth` crate's transport, natively: reqwest, never following redirects.
pub struct Reqwest(reqwest::Client);

impl Default for Reqwest {
    fn default() -> Self {
        Reqwest(
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a reqwest client"),
        )
    }
}

impl Reqwest {
    /// Over this client (which should not follow redirects either).
    pub fn with(client: reqwest::Client) -> Reqwest {
        Reqwest(client)
    }
}

impl atrium_xrpc::HttpClient for Reqwest {
    async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        let (parts, body) = request.into_parts();
        let mut outgoing = self.0.request(parts.method, parts.uri.to_string());
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let response = outgoing.body(body).send().await?;
        let mut builder = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        Ok(builder.body(response.bytes().await?.to_vec())?)
    }
}

/// One account's password session on a PDS, for writing many records as any atproto app would
/// (one `createSession`, then `createRecord`, `putRecord`, `deleteRecord`).
pub struct Writer {
    http: reqwest::Client,
    pds_url: String,
    pub did: String,
    token: String,
}

impl Writer {
    pub async fn sign_in(pds_url: &str, user: &str) -> Result<Writer> {
        let http = reqwest::Client::new();
        let session: Value = http
            .post(format!("{pds_url}/xrpc/com.atproto.server.createSession"))
            .json(&json!({ "identifier": user, "password": DEMO_PASSWORD }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(Writer {
            did: session["did"].as_str().context("no did")?.to_owned(),
            token: session["accessJwt"]
                .as_str()
                .context("no accessJwt")?
                .to_owned(),
            pds_url: pds_url.to_owned(),
            http,
        })
    }

    async fn call(&self, method: &str, input: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}/xrpc/com.atproto.repo.{method}", self.pds_url))
            .bearer_auth(&self.token)
            .json(&input)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        ensure!(status.is_success(), "{method} answered {status}: {body}");
        Ok(body)
    }

    /// Writes `record` (its `$type` set to `collection`) under `rkey`, or a new key; returns its
    /// AT URI.
    pub async fn put(&self, collection: &str, rkey: Option<&str>, record: Value) -> Result<String> {
        let mut record = record;
        record["$type"] = collection.into();
        let written = match rkey {
            None => {
                let input = json!({ "repo": self.did, "collection": collection, "record": record });
                self.call("createRecord", input).await?
            }
            Some(rkey) => {
                let input = json!({ "repo": self.did, "collection": collection, "rkey": rkey, "record": record });
                self.call("putRecord", input).await?
            }
        };
        Ok(written["uri"].as_str().context("no uri")?.to_owned())
    }

    /// Deletes the record at `uri` (of this account).
    pub async fn delete(&self, uri: &str) -> Result<()> {
        let mut parts = uri.rsplitn(3, '/');
        let (rkey, collection) = (parts.next(), parts.next());
        let (Some(rkey), Some(collection)) = (rkey, collection) else {
            bail!("not an AT URI: {uri}");
        };
        let input = json!({ "repo": self.did, "collection": collection, "rkey": rkey });
        self.call("deleteRecord", input).await.map(drop)
    }
}

/// Every record of `collection` in `did`'s repository on the PDS at `pds_url` (all pages), as
/// `listRecords` gives them (newest first): what the network holds, for comparing D1 with.
pub async fn all_records(pds_url: &str, did: &str, collection: &str) -> Result<Vec<Value>> {
    let mut records = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "{pds_url}/xrpc/com.atproto.repo.listRecords?repo={did}&collection={collection}&limit=100"
        );
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let body: Value = reqwest::get(url).await?.error_for_status()?.json().await?;
        let page = body["records"].as_array().context("no records")?;
        records.extend(page.iter().cloned());
        cursor = body["cursor"].as_str().map(str::to_owned);
        if page.is_empty() || cursor.is_none() {
            return Ok(records);
        }
    }
}
