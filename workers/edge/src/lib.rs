//! The edge worker: the only public worker. It serves the pages, hands browsers' WebSockets to the
//! broker, reports health, and wakes the listener (from its cron trigger, and on the first request
//! an isolate serves, so a deploy does not wait for the next minute).

mod health;

use std::sync::atomic::{AtomicBool, Ordering};

use domain::internal;
use worker::*;

/// Whether this isolate has woken the listener yet.
static LISTENER_WOKEN: AtomicBool = AtomicBool::new(false);

#[event(start)]
fn start() {
    workers_common::log::init("edge");
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    if !LISTENER_WOKEN.swap(true, Ordering::Relaxed) {
        let env = env.clone();
        ctx.wait_until(async move {
            match wake_listener(&env).await {
                Ok(status) => tracing::info!(status, "listener woken by a first request"),
                Err(error) => tracing::error!(%error, "waking the listener failed"),
            }
        });
    }
    let method = req.method();
    let path = req.path();
    let response = match (method.clone(), path.as_str()) {
        (Method::Get, "/") => home(&env).await,
        (Method::Get, "/ws") => websocket(req, &env).await,
        (Method::Get, "/health") => health::report(&env).await,
        (_, path) if path.starts_with(TEST_HOOK_PREFIX) => test_hook(req, &env).await,
        (Method::Get | Method::Head, _) => workers_common::text_error(404, "not found"),
        _ => workers_common::text_error(405, "method not allowed"),
    };
    match response {
        Ok(response) => {
            tracing::info!(%method, path, status = response.status_code(), "request");
            Ok(response)
        }
        Err(error) => {
            tracing::error!(%method, path, %error, "request failed");
            workers_common::text_error(500, "internal error")
        }
    }
}

/// The cron trigger makes sure the listener is running; waking it twice is harmless.
#[event(scheduled)]
async fn scheduled(event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    match wake_listener(&env).await {
        Ok(status) => tracing::info!(cron = event.cron(), status, "listener woken"),
        Err(error) => tracing::error!(cron = event.cron(), %error, "waking the listener failed"),
    }
}

async fn wake_listener(env: &Env) -> Result<u16> {
    let url = format!("https://listener{}", internal::LISTENER_WAKE);
    let response = env.service("LISTENER")?.fetch(url, None).await?;
    Ok(response.status_code())
}

/// Hands a browser's WebSocket upgrade to the broker, refusing cross-site pages.
async fn websocket(req: Request, env: &Env) -> Result<Response> {
    let upgrade = req.headers().get("Upgrade")?;
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return workers_common::text_error(426, "expected a WebSocket upgrade");
    }
    if let Some(origin) = req.headers().get("Origin")? {
        let url = req.url()?;
        let own = url.origin().ascii_serialization();
        if origin != own {
            return workers_common::text_error(403, "cross-origin WebSocket refused");
        }
    }
    env.service("BROKER")?.fetch_request(req).await
}

/// Routes under this prefix exist only when the `TEST_HOOKS` var is `"on"`, which only the test and
/// benchmark stacks set (`wrangler dev --var TEST_HOOKS:on`); no wrangler config sets it, and the
/// deploy refuses a config that does.
const TEST_HOOK_PREFIX: &str = "/__test/";

/// `/__test/broker/<route>`: lets tests and benchmarks reach the broker's internal routes (publish,
/// head, stats) the way the listener and edge itself will, through the service binding.
async fn test_hook(req: Request, env: &Env) -> Result<Response> {
    let enabled = env
        .var("TEST_HOOKS")
        .is_ok_and(|value| value.to_string() == "on");
    if !enabled {
        return workers_common::text_error(404, "not found");
    }
    let url = req.url()?;
    let Some(route) = url.path().strip_prefix("/__test/broker") else {
        return workers_common::text_error(404, "no such test hook");
    };
    let mut target = Url::parse("https://broker")?;
    target.set_path(route);
    target.set_query(url.query());
    let forwarded = Request::new_with_init(
        target.as_str(),
        RequestInit::new()
            .with_method(req.method())
            .with_headers(req.headers().clone())
            .with_body(req.inner().body().map(Into::into)),
    )?;
    env.service("BROKER")?.fetch_request(forwarded).await
}

/// The page, with the broker's head sequence number as of now, so that its socket is sent whatever
/// is published after this moment (docs/broker.md). Without the broker the page still renders, and
/// its socket starts live.
async fn home(env: &Env) -> Result<Response> {
    let seq = match broker_head(env).await {
        Ok(seq) => seq.to_string(),
        Err(error) => {
            tracing::warn!(%error, "broker head unavailable; the page starts live");
            String::new()
        }
    };
    Response::from_html(HOME_PAGE.replace("{seq}", &seq))
}

async fn broker_head(env: &Env) -> Result<u64> {
    let url = format!("https://broker{}", internal::BROKER_HEAD);
    let mut response = env.service("BROKER")?.fetch(url, None).await?;
    if response.status_code() != 200 {
        return Err(Error::RustError(format!(
            "broker head answered {}",
            response.status_code()
        )));
    }
    Ok(response.json::<internal::BrokerHead>().await?.seq)
}

const HOME_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Statusphere</title>
</head>
<body>
<main id="app" data-seq="{seq}">
<h1>Statusphere</h1>
<p>Set your status on the Atmosphere.</p>
<ul id="live" aria-live="polite"></ul>
</main>
<script>
(function () {
  // The live feed (docs/broker.md): resume from the last sequence number seen, ping every 30 s,
  // reconnect with backoff, reload when told to.
  var seq = document.getElementById("app").dataset.seq;
  var delay = 1000;
  function connect() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var ws = new WebSocket(proto + "//" + location.host + "/ws" + (seq ? "?since=" + seq : ""));
    var pinger = null;
    ws.onopen = function () {
      delay = 1000;
      pinger = setInterval(function () { ws.send('{"type":"ping"}'); }, 30000);
    };
    ws.onmessage = function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "pong") return;
      if (message.v !== 1 || message.type === "reload") { location.reload(); return; }
      seq = String(message.seq);
      var li = document.createElement("li");
      li.textContent = event.data;
      document.getElementById("live").prepend(li);
    };
    ws.onclose = function (event) {
      clearInterval(pinger);
      if (event.reason === "reload") return;
      setTimeout(connect, delay + Math.random() * delay / 2);
      delay = Math.min(delay * 2, 30000);
    };
  }
  connect();
})();
</script>
</body>
</html>
"#;
