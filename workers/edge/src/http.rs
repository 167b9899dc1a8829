//! The Workers fetch API as an [`atrium_xrpc::HttpClient`]: the transport under the `oauth`
//! crate and atrium's typed XRPC calls. Redirects are not followed (a redirect could lead a
//! checked URL somewhere unchecked), and bodies are bounded.

use worker::js_sys::Uint8Array;
use worker::send::SendFuture;
use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The most any answer may weigh: far above what PDSes and authorization servers send.
const MAX_BODY: usize = 1024 * 1024;

pub struct WorkerHttp;

impl atrium_xrpc::HttpClient for WorkerHttp {
    async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, BoxError> {
        // JS futures are not Send; a Worker is single-threaded, which SendFuture asserts, so
        // that this also compiles natively (where atrium's traits ask for Send).
        SendFuture::new(fetch(request)).await
    }
}

async fn fetch(request: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, BoxError> {
    let (parts, body) = request.into_parts();
    let headers = Headers::new();
    for (name, value) in &parts.headers {
        headers
            .append(name.as_str(), value.to_str()?)
            .map_err(|e| e.to_string())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(parts.method.as_str().to_owned()))
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !body.is_empty() {
        init.with_body(Some(Uint8Array::from(body.as_slice()).into()));
    }
    let request =
        Request::new_with_init(&parts.uri.to_string(), &init).map_err(|e| e.to_string())?;
    let mut response = Fetch::Request(request)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let declared = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(format!("answer larger than {MAX_BODY} bytes").into());
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if bytes.len() > MAX_BODY {
        return Err(format!("answer larger than {MAX_BODY} bytes").into());
    }
    let mut builder = http::Response::builder().status(response.status_code());
    for (name, value) in response.headers().entries() {
        builder = builder.header(name, value);
    }
    Ok(builder.body(bytes)?)
}
