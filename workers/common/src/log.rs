//! Structured logs: every `tracing` event becomes one JSON object on one console line, which is
//! what `wrangler tail` and the `wrangler dev` terminal show and what Workers Logs indexes
//! (`[observability]` in each wrangler config). Each line carries `timestamp`, `level`, `worker`,
//! `message`, the event's fields, and the fields of every span it happens in, outermost first:
//! so a line inside a request or an alarm carries its `request_id` or `alarm_id` without saying
//! so itself (docs/operations.md, "Logs").
//!
//! A small `tracing` subscriber of our own rather than `tracing-subscriber`'s JSON formatter: that
//! one nests span fields under `span` and cannot add the worker's name, its default timer reads
//! `SystemTime` (which traps on wasm32: the timestamp comes from the JavaScript clock), and its
//! span registry (a sharded slab, per-thread stacks) is built for many threads, where a worker's
//! isolate has one: about 7 KiB of each gzipped bundle. Here the open spans are a map by id and
//! the entered ones a stack, behind a mutex that the single thread never waits on.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Mutex, Once};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Installs the JSON subscriber (once per isolate; later calls do nothing) and a panic hook that logs
/// the panic as a structured event before the isolate aborts.
pub fn init(worker_name: &'static str) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = JsonLines {
            worker: worker_name,
            spans: Mutex::new(Spans::default()),
        };
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

/// The subscriber: formats each event at INFO or above as one line on `console.log`.
struct JsonLines {
    worker: &'static str,
    spans: Mutex<Spans>,
}

/// The spans open now, and the ones entered, innermost last.
#[derive(Default)]
struct Spans {
    last_id: u64,
    open: BTreeMap<u64, OpenSpan>,
    entered: Vec<u64>,
}

/// An open span: its fields, its parent, and how many handles (its own, and each open child's
/// hold on its parent) keep it open.
struct OpenSpan {
    parent: Option<u64>,
    fields: Map<String, Value>,
    handles: usize,
}

impl Spans {
    /// The parent a new span or an event gets: the one named, none for a root, or else the
    /// innermost span entered.
    fn parent(&self, explicit: Option<&Id>, root: bool) -> Option<u64> {
        match explicit {
            Some(id) => Some(id.into_u64()),
            None if root => None,
            None => self.entered.last().copied(),
        }
    }

    /// The fields of `span` and of every span around it, outermost first (an inner span's field
    /// replaces an outer one's of the same name).
    fn fields_around(&self, mut span: Option<u64>) -> Map<String, Value> {
        let mut chain = Vec::new();
        while let Some(open) = span.and_then(|id| self.open.get(&id)) {
            chain.push(&open.fields);
            span = open.parent;
        }
        let mut fields = Map::new();
        for layer in chain.into_iter().rev() {
            fields.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        fields
    }
}

impl JsonLines {
    fn spans(&self) -> std::sync::MutexGuard<'_, Spans> {
        // Poisoned only by a panic, which aborts the isolate (`panic = "abort"`).
        self.spans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Subscriber for JsonLines {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::INFO)
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        // Fields are formatted before the lock is taken: a field's `Debug` may log.
        let mut fields = Map::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans();
        let parent = spans.parent(attrs.parent(), attrs.is_root());
        if let Some(open) = parent.and_then(|id| spans.open.get_mut(&id)) {
            open.handles += 1;
        }
        spans.last_id += 1;
        let id = spans.last_id;
        spans.open.insert(
            id,
            OpenSpan {
                parent,
                fields,
                handles: 1,
            },
        );
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Map::new();
        values.record(&mut Fields(&mut fields));
        if let Some(open) = self.spans().open.get_mut(&span.into_u64()) {
            open.fields.extend(fields);
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let around = {
            let spans = self.spans();
            spans.fields_around(spans.parent(event.parent(), event.is_root()))
        };
        let mut line = Map::new();
        let now = String::from(js_sys::Date::new_0().to_iso_string());
        line.insert("timestamp".into(), Value::from(now));
        line.insert(
            "level".into(),
            Value::from(event.metadata().level().as_str()),
        );
        line.extend(around);
        event.record(&mut Fields(&mut line));
        // Last, so that a field of the same name cannot hide it.
        line.insert("worker".into(), Value::from(self.worker));
        if let Ok(text) = serde_json::to_string(&line) {
            worker::console_log!("{text}");
        }
    }

    fn enter(&self, span: &Id) {
        self.spans().entered.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut spans = self.spans();
        if let Some(at) = spans.entered.iter().rposition(|&id| id == span.into_u64()) {
            spans.entered.remove(at);
        }
    }

    fn clone_span(&self, span: &Id) -> Id {
        if let Some(open) = self.spans().open.get_mut(&span.into_u64()) {
            open.handles += 1;
        }
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let mut spans = self.spans();
        let mut next = Some(span.into_u64());
        let mut closed = false;
        // A span that closes lets go of its parent, which may close in turn.
        while let Some(id) = next.take() {
            let Some(open) = spans.open.get_mut(&id) else {
                break;
            };
            open.handles -= 1;
            if open.handles > 0 {
                break;
            }
            next = open.parent;
            spans.open.remove(&id);
            closed |= id == span.into_u64();
        }
        closed
    }
}

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
