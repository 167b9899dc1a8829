//! `POST /status`: validates the status against the lexicon, spends one unit of the account's
//! write budget, writes the record to the person's repo with `com.atproto.repo.createRecord`
//! (atrium's typed client over DPoP), then upserts the optimistic row into D1 and publishes it.
//! Nothing is written to D1 unless the PDS accepted the record.

use atrium_api::client::AtpServiceClient;
use atrium_api::com::atproto::repo::create_record;
use domain::present::iso8601;
use domain::sql::{self, StatusViewRow};
use domain::wire::ServerMessage;
use domain::StatusView;
use lexicon::{CreatedAt, StatusText, STATUS_NSID};
use oauth::{PdsClient, Session};
use worker::{Env, Request, Response, Result};

use crate::auth;
use crate::config::Config;
use crate::http::WorkerHttp;
use crate::page::{self, Notice, Viewer};
use crate::ports::D1;
use crate::session::{self, SignedIn};

/// What a person is told when their PDS took the status but D1 could not record it.
const WRITTEN_NOT_RECORDED: &str =
    "Your status was written to your repository; this page will catch up in a moment.";

/// Why a write did not happen, in words for the person, with the status code.
struct Refusal(u16, String);

pub async fn set_status(
    mut req: Request,
    env: &Env,
    config: &Config,
    now_ms: i64,
) -> Result<Response> {
    let wants_json = wants_json(&req)?;
    let db = env.d1("DB")?;
    let signed_in = session::current(&req, &db, config.secure_cookies, now_ms).await?;
    let Some(signed_in) = signed_in else {
        let message = "Sign in to set your status.";
        if wants_json {
            return json_refusal(401, message);
        }
        let notice = Notice::error(message);
        return page::render(env, config, Viewer::Nobody, Some(notice), "", now_ms, 401).await;
    };
    let form = req.form_data().await.ok();
    let text = form
        .as_ref()
        .and_then(|f| f.get_field("status"))
        .unwrap_or_default();
    match write(env, config, &signed_in, &text, now_ms).await? {
        // The row as D1 holds it (what the broker publishes too): the script shows it at once,
        // whether or not its socket is connected.
        Ok(Some(view)) if wants_json => Response::from_json(&serde_json::json!({ "status": view })),
        Ok(Some(_)) => auth::see_other("/", &[]),
        // Written to the repo, but not recorded here (D1 failed): say so, rather than "failed".
        Ok(None) if wants_json => Ok(Response::from_json(
            &serde_json::json!({ "status": null, "notice": WRITTEN_NOT_RECORDED }),
        )?
        .with_status(202)),
        Ok(None) => {
            let notice = Notice::info(WRITTEN_NOT_RECORDED);
            let known = Viewer::Known(&signed_in);
            match page::render(env, config, known, Some(notice), "", now_ms, 202).await {
                Ok(page) => Ok(page),
                Err(_) => Ok(Response::ok(WRITTEN_NOT_RECORDED)?.with_status(202)),
            }
        }
        Err(Refusal(status, message)) => {
            tracing::warn!(did = %signed_in.did, status, message, "status write refused");
            let response = if wants_json {
                json_refusal(status, &message)?
            } else if status == 401 {
                // The session is over: back to sign-in, with the reason, and no loop.
                let notice = Notice::error(message);
                page::render(env, config, Viewer::Nobody, Some(notice), "", now_ms, 401).await?
            } else {
                let notice = Notice::error(message);
                page::render(
                    env,
                    config,
                    Viewer::Known(&signed_in),
                    Some(notice),
                    "",
                    now_ms,
                    status,
                )
                .await?
            };
            if status == 401 {
                response
                    .headers()
                    .set("Set-Cookie", &session::clear_cookie(config.secure_cookies))?;
            }
            Ok(response)
        }
    }
}

/// Whether the request asks for JSON: the page's script posts with fetch and does; a plain form
/// gets a page or a redirect.
pub fn wants_json(req: &Request) -> Result<bool> {
    Ok(req
        .headers()
        .get("Accept")?
        .is_some_and(|accept| accept.contains("application/json")))
}

/// A refusal for the page's script: `{"error": message}` with the status.
fn json_refusal(status: u16, message: &str) -> Result<Response> {
    Ok(Response::from_json(&serde_json::json!({ "error": message }))?.with_status(status))
}

async fn write(
    env: &Env,
    config: &Config,
    who: &SignedIn,
    text: &str,
    now_ms: i64,
) -> Result<std::result::Result<Option<StatusView>, Refusal>> {
    let Ok(status) = StatusText::new(text) else {
        return Ok(Err(Refusal(
            400,
            "That is not a valid status: pick one emoji.".into(),
        )));
    };
    let db = env.d1("DB")?;
    // One round trip: a unit of the budget, and the tokens.
    let read = workers_common::d1::batch(
        &db,
        &[
            sql::count_write(&who.did, now_ms),
            sql::get_oauth_session(&who.did),
        ],
    )
    .await?;
    let counted = read[0]
        .results::<sql::WriteCount>()?
        .into_iter()
        .next()
        .ok_or_else(|| worker::Error::RustError("the write budget returned no row".into()))?;
    let d1 = D1(&db);
    let sessions = match auth::sessions(&d1, config) {
        Ok(sessions) => sessions,
        Err(error) => return Ok(Err(error.into())),
    };
    let stored = sessions.decode(&who.did, read[1].results()?);
    if sql::writes_in_last_minute(counted, now_ms) > config.writes_per_minute as f64 {
        return Ok(Err(Refusal(
            429,
            "You are changing your status too quickly. Please wait a minute.".into(),
        )));
    }
    let created_at = match CreatedAt::parse(&iso8601(now_ms)) {
        Ok(c) => c,
        Err(e) => return Ok(Err(Refusal(500, format!("clock error: {e}")))),
    };
    let mut session = match sessions.fresh_from(&who.did, stored, false).await {
        Ok(session) => session,
        Err(error) => return Ok(Err(error.into())),
    };
    let mut retried = false;
    let (output, nonce) = loop {
        match create(&session, status.as_str(), created_at.as_str(), now_ms).await {
            Ok(done) => break done,
            Err(CreateError::Expired) if !retried => {
                retried = true;
                session = match sessions.fresh(&who.did, true).await {
                    Ok(session) => session,
                    Err(error) => return Ok(Err(error.into())),
                };
            }
            Err(CreateError::Expired) => return Ok(Err(account::Error::Ended.into())),
            Err(CreateError::Refused(why)) => {
                return Ok(Err(Refusal(
                    502,
                    format!("Your server refused the status ({why}). Nothing was changed."),
                )))
            }
            Err(CreateError::Unreachable(why)) => return Ok(Err(unavailable(&why))),
        }
    };
    // The PDS is the account's own choice of server: its answer must name this account's new
    // record before it touches D1 (domain::write).
    let cid = output.cid.as_ref().to_string();
    let rev = output.commit.as_ref().map(|c| c.rev.to_string());
    let answer = domain::write::CreateAnswer {
        uri: &output.uri,
        cid: &cid,
        rev: rev.as_deref(),
    };
    let row = match domain::write::optimistic_row(
        &who.did,
        status.as_str(),
        created_at.as_str(),
        answer,
        now_ms,
    ) {
        Ok(row) => row,
        Err(error) => {
            tracing::warn!(did = %who.did, %error, "a PDS's createRecord answer was refused");
            return Ok(Err(Refusal(
                502,
                format!(
                    "Your server's answer did not check out ({error}), so this app recorded \
                     nothing. Your server may be misbehaving."
                ),
            )));
        }
    };
    let mut statements = sql::upsert_statuses(std::slice::from_ref(&row));
    // Read back in the same transaction: what the page and the broker get is what D1 holds.
    let read_back = statements.len();
    statements.push(sql::status_by_uri(&row.uri));
    if let Some(nonce) = nonce.filter(|n| Some(n) != session.pds_nonce.as_ref()) {
        statements.push(sql::set_pds_nonce(&who.did, &nonce));
    }
    let results = match workers_common::d1::batch(&db, &statements).await {
        Ok(results) => results,
        Err(error) => {
            // The record is in the person's repo: saying "failed" would invite a duplicate. The
            // listener records it when the network echoes it.
            tracing::error!(%error, did = %who.did, uri = %row.uri, "status written, but D1 failed");
            return Ok(Ok(None));
        }
    };
    let view = results
        .get(read_back)
        .and_then(|r| r.results::<StatusViewRow>().ok())
        .and_then(|rows| rows.into_iter().next())
        .map(StatusViewRow::into_view);
    if let Some(view) = &view {
        publish(
            env,
            ServerMessage::StatusUpserted {
                status: view.clone(),
            },
        )
        .await;
    }
    tracing::info!(did = %who.did, uri = %row.uri, "status written");
    Ok(Ok(view))
}

impl From<account::Error> for Refusal {
    fn from(error: account::Error) -> Refusal {
        match error {
            account::Error::Ended => {
                Refusal(401, "Your sign-in has ended. Please sign in again.".into())
            }
            account::Error::Unavailable(why) => unavailable(&why),
            account::Error::Store(why) => {
                tracing::error!(%why, "D1 failed while preparing a write");
                Refusal(
                    503,
                    "This app could not reach its database. Nothing was changed; please try \
                     again."
                        .into(),
                )
            }
        }
    }
}

fn unavailable(why: &str) -> Refusal {
    Refusal(
        502,
        format!("Your server could not be reached ({why}). Nothing was changed; please try again."),
    )
}

enum CreateError {
    /// The PDS does not take the access token any more.
    Expired,
    Refused(String),
    Unreachable(String),
}

async fn create(
    session: &Session,
    status: &str,
    created_at: &str,
    now_ms: i64,
) -> std::result::Result<(create_record::OutputData, Option<String>), CreateError> {
    let pds = PdsClient::new(&WorkerHttp, session, now_ms / 1000);
    let record =
        serde_json::json!({ "$type": STATUS_NSID, "status": status, "createdAt": created_at });
    let input = create_record::InputData {
        collection: STATUS_NSID
            .parse()
            .map_err(|e: &str| CreateError::Refused(e.into()))?,
        record: serde_json::from_value(record).map_err(|e| CreateError::Refused(e.to_string()))?,
        repo: session
            .did
            .parse()
            .map_err(|e: &str| CreateError::Refused(e.into()))?,
        rkey: None,
        swap_commit: None,
        // The PDS does not know this lexicon; the record was validated here.
        validate: Some(false),
    };
    let nonce_cell = pds.nonce_cell();
    let client = AtpServiceClient::new(pds);
    let result = client
        .service
        .com
        .atproto
        .repo
        .create_record(input.into())
        .await;
    let nonce = nonce_cell.lock().ok().and_then(|n| n.clone());
    match result {
        Ok(output) => Ok((output.data, nonce)),
        Err(atrium_xrpc::Error::XrpcResponse(e)) if e.status == 401 => Err(CreateError::Expired),
        // A 401 whose WWW-Authenticate says the token is bad (expired or revoked at the PDS).
        Err(atrium_xrpc::Error::Authentication(_)) => Err(CreateError::Expired),
        Err(atrium_xrpc::Error::XrpcResponse(e)) => Err(CreateError::Refused(match e.error {
            Some(atrium_xrpc::error::XrpcErrorKind::Undefined(body)) => {
                format!(
                    "{}: {}",
                    body.error.unwrap_or_default(),
                    body.message.unwrap_or_default()
                )
            }
            Some(atrium_xrpc::error::XrpcErrorKind::Custom(custom)) => custom.to_string(),
            None => format!("HTTP {}", e.status),
        })),
        Err(atrium_xrpc::Error::HttpClient(e)) => Err(CreateError::Unreachable(e.to_string())),
        Err(e) => Err(CreateError::Refused(e.to_string())),
    }
}

/// One publish to the broker; a failure is logged (pages catch up on reload), not an error:
/// the status is already in the repo and in D1.
async fn publish(env: &Env, message: ServerMessage) {
    let result = async {
        let broker = env.service("BROKER")?;
        workers_common::broker::publish(&broker, vec![message]).await
    }
    .await;
    if let Err(error) = result {
        tracing::error!(%error, "publishing a status to the broker failed");
    }
}
