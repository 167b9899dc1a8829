//! The two repository calls the app makes as a person, `com.atproto.repo.createRecord` and
//! `deleteRecord`, with their input and output written out here rather than taken from
//! atrium-api's generated types: those check every string field with a regular expression, and
//! the `regex` crate they bring weighed more than the rest of edge (docs/benchmarks.md,
//! "Bundles"). The answer is checked by `domain::write` whatever its types say. The call itself
//! goes through [`atrium_xrpc::XrpcClient`] (the DPoP client of `oauth::PdsClient`).

use atrium_xrpc::{InputDataOrBytes, OutputDataOrBytes, XrpcClient, XrpcRequest};
use serde::{Deserialize, Serialize};

/// The commit a write made.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommitMeta {
    pub cid: String,
    pub rev: String,
}

/// What `createRecord` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Created {
    pub uri: String,
    pub cid: String,
    #[serde(default)]
    pub commit: Option<CommitMeta>,
}

/// What `deleteRecord` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deleted {
    #[serde(default)]
    pub commit: Option<CommitMeta>,
}

/// No error of these calls is told apart by name: each is reported with the PDS's own words
/// (`XrpcErrorKind::Undefined`).
#[derive(Debug, Deserialize)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

pub type Result<T> = atrium_xrpc::Result<T, Never>;

#[derive(Serialize)]
struct CreateInput<'a> {
    repo: &'a str,
    collection: &'a str,
    record: &'a serde_json::Value,
    validate: bool,
}

#[derive(Serialize)]
struct DeleteInput<'a> {
    repo: &'a str,
    collection: &'a str,
    rkey: &'a str,
}

/// Creates `record` in `repo`'s `collection` (a fresh TID for its key). `validate` false: the
/// PDS need not know the lexicon, the record was checked here.
pub async fn create_record<C: XrpcClient + Sync>(
    client: &C,
    repo: &str,
    collection: &str,
    record: &serde_json::Value,
) -> Result<Created> {
    let input = CreateInput {
        repo,
        collection,
        record,
        validate: false,
    };
    post(client, "com.atproto.repo.createRecord", input).await
}

/// Deletes `repo`'s record `collection/rkey` (a record already gone is not an error).
pub async fn delete_record<C: XrpcClient + Sync>(
    client: &C,
    repo: &str,
    collection: &str,
    rkey: &str,
) -> Result<Deleted> {
    let input = DeleteInput {
        repo,
        collection,
        rkey,
    };
    post(client, "com.atproto.repo.deleteRecord", input).await
}

async fn post<C, I, O>(client: &C, nsid: &str, input: I) -> Result<O>
where
    C: XrpcClient + Sync,
    I: Serialize + Send + Sync,
    O: serde::de::DeserializeOwned + Send + Sync,
{
    let request = XrpcRequest::<(), I> {
        method: http::Method::POST,
        nsid: nsid.to_owned(),
        parameters: None,
        input: Some(InputDataOrBytes::Data(input)),
        encoding: Some("application/json".to_owned()),
    };
    match client.send_xrpc::<(), I, O, Never>(&request).await? {
        OutputDataOrBytes::Data(output) => Ok(output),
        OutputDataOrBytes::Bytes(_) => Err(atrium_xrpc::Error::UnexpectedResponseType),
    }
}
