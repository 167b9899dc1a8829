//! Structured logs: every `tracing` event becomes one JSON line on the console, which is what
//! `wrangler tail` and the `wrangler dev` terminal show.
//!
//! `tracing-subscriber`'s default timer reads `SystemTime`, which traps on wasm32, so the timestamp
//! comes from the JavaScript clock instead.

use std::io;
use std::sync::Once;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the JSON subscriber (once per isolate; later calls do nothing) and a panic hook that logs
/// the panic as a structured event before the isolate aborts.
pub fn init(worker_name: &'static str) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(false)
            .with_timer(JsClock)
            .with_writer(Console)
            .finish();
        // Fails only if a subscriber is already set, which `Once` rules out.
        let _ = tracing::subscriber::set_global_default(subscriber);
        std::panic::set_hook(Box::new(move |info| {
            tracing::error!(worker = worker_name, panic = %info, "panic");
        }));
    });
}

/// RFC 3339 timestamps from `Date.now()`.
struct JsClock;

impl FormatTime for JsClock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let iso = js_sys::Date::new_0().to_iso_string();
        write!(w, "{}", String::from(iso))
    }
}

/// Hands out one [`Line`] per event.
struct Console;

impl<'a> MakeWriter<'a> for Console {
    type Writer = Line;

    fn make_writer(&'a self) -> Self::Writer {
        Line(Vec::with_capacity(256))
    }
}

/// Buffers one formatted event and writes it to `console.log` when dropped, so that an event is
/// exactly one console line.
struct Line(Vec<u8>);

impl io::Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end_matches('\n');
        if !text.is_empty() {
            worker::console_log!("{text}");
        }
    }
}
