//! Structured logs: every `tracing` event becomes one JSON object on one console line, which is
//! what `wrangler tail` and the `wrangler dev` terminal show and what Workers Logs indexes
//! (`[observability]` in each wrangler config). Each line carries `timestamp`, `level`, `worker`,
//! `message`, the event's fields, and the fields of every span it happens in, outermost first:
//! so a line inside a request or an alarm carries its `request_id` or `alarm_id` without saying
//! so itself (docs/operations.md, "Logs").
//!
//! A small `tracing` layer of our own rather than `tracing-subscriber`'s JSON formatter: that one
//! nests span fields under `span` and cannot add the worker's name; and its default timer reads
//! `SystemTime`, which traps on wasm32, so the timestamp comes from the JavaScript clock.

use std::fmt::Debug;
use std::sync::Once;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Installs the JSON layer (once per isolate; later calls do nothing) and a panic hook that logs
/// the panic as a structured event before the isolate aborts.
pub fn init(worker_name: &'static str) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(JsonLines {
            worker: worker_name,
        });
        // Fails only if a subscriber is already set, which `Once` rules out.
        let _ = tracing::subscriber::set_global_default(subscriber);
        std::panic::set_hook(Box::new(|info| {
            tracing::error!(panic = %info, "panic");
        }));
    });
}

/// A random id for a request or an alarm (16 hex digits), when the platform gives none.
pub fn new_id() -> String {
    // Two draws of 32 bits: one f64 carries only 53 random bits.
    let half = || (js_sys::Math::random() * f64::from(u32::MAX)) as u32;
    format!("{:08x}{:08x}", half(), half())
}

/// The layer: formats each event at INFO or above as one line on `console.log`.
struct JsonLines {
    worker: &'static str,
}

/// A span's fields, kept with it until it closes.
struct SpanFields(Map<String, Value>);

/// Collects fields as JSON values.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *metadata.level() <= Level::INFO
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut Fields(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut Fields(&mut fields.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        let now = String::from(js_sys::Date::new_0().to_iso_string());
        line.insert("timestamp".into(), Value::from(now));
        line.insert(
            "level".into(),
            Value::from(event.metadata().level().as_str()),
        );
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    line.extend(fields.0.clone());
                }
            }
        }
        event.record(&mut Fields(&mut line));
        // Last, so that a field of the same name cannot hide it.
        line.insert("worker".into(), Value::from(self.worker));
        if let Ok(text) = serde_json::to_string(&line) {
            worker::console_log!("{text}");
        }
    }
}

/// The span of one HTTP request (from outside, or from another worker through a binding): every
/// line logged while it is served carries `request_id` (Cloudflare's `CF-Ray` where there is
/// one), `method` and `path`.
pub fn request_span(req: &worker::Request) -> tracing::Span {
    let id = req
        .headers()
        .get("CF-Ray")
        .ok()
        .flatten()
        .map(|ray| domain::bounded(&ray))
        .unwrap_or_else(new_id);
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %domain::bounded(&crate::target(req).0)
    )
}

/// The span of one alarm (or cron) invocation: every line logged in it carries `alarm_id`, and
/// `cron` once recorded (edge's scheduled run).
pub fn alarm_span() -> tracing::Span {
    tracing::info_span!("alarm", alarm_id = %new_id(), cron = tracing::field::Empty)
}
