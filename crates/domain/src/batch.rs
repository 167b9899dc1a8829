//! How the listener reads one Jetstream connection, as a pure state machine ([`Batcher`]): frames
//! and the passing of time go in; out come batches to record and, at the end, why the connection
//! stops ([`End`]). The listener (`workers/listener/src/session.rs`) only waits for the socket,
//! records what it is handed and reconnects; every rule about when to write and when to stop is
//! here, tested natively for each stop reason.
//!
//! A batch is written when the stream pauses for a moment ([`LULL_MS`]: a lone status is not held
//! back), when it is full, or when its first frame has waited `flush_ms`. A connection stops when
//! a poll has caught up with the moment it woke, after `max_batches` (the free plan's
//! subrequests), after `session_ms`, or after a silence.
//!
//! A silence is judged against the network's [`Pace`]. Jetstream sends every subscriber each
//! account and identity event whatever it filters, so the public network's stream is never
//! quiet for long; a Worker cannot see WebSocket pings, so frames are the only sign of life. On a
//! stream known to be busy, a silence far longer than its usual gaps means the instance is
//! stuck: `Silent`, a failure, and the next URL. On a stream not known to be busy (a local
//! network, a quiet test), silence is only quiet: a poll ends `Quiet`, a live connection keeps
//! reading. In a poll, the stream also stops far behind now when an instance is stuck mid-replay:
//! the silence judged is then how far behind now the last event is.

/// Frames are written once the stream pauses this long (or the batch is full, or `flush_ms`).
pub const LULL_MS: i64 = 25;
/// With nothing buffered, time is looked at least this often, so that a stop condition does not
/// go unnoticed while no frame comes.
pub const TICK_MS: i64 = 250;

/// A stream is busy (its silences mean something) once it has shown at least this many events...
pub const BUSY_MIN_EVENTS: u64 = 1_000;
/// ...at most this far apart on average, in event time (µs).
pub const BUSY_MAX_GAP_US: i64 = 1_000_000;
/// A busy stream is silent after this many of its mean gaps without an event (and at least
/// `silent_ms`): for events that come at random, a gap of a hundred means is never chance.
pub const SILENCE_GAPS: i64 = 100;
/// The pace follows the network: past this span of event time, what it counted is halved.
pub const PACE_WINDOW_US: i64 = 600_000_000;

/// How busy the network is: the valid events seen over a span of event time, learned from each
/// batch and kept across connections (it is the network's, not one instance's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Pace {
    pub events: u64,
    pub span_us: i64,
}

impl Pace {
    /// A batch took the stream `span_us` further in event time with `events` valid events.
    pub fn observe(&mut self, span_us: i64, events: u64) {
        self.events = self.events.saturating_add(events);
        self.span_us = self.span_us.saturating_add(span_us.max(0));
        while self.span_us > PACE_WINDOW_US {
            self.events /= 2;
            self.span_us /= 2;
        }
    }

    /// The mean gap between events (µs), once the stream has shown [`BUSY_MIN_EVENTS`].
    pub fn mean_gap_us(&self) -> Option<i64> {
        (self.events >= BUSY_MIN_EVENTS).then(|| self.span_us / self.events as i64)
    }

    /// The mean gap of a busy stream; `None` for one whose silences say nothing.
    fn busy_gap_us(&self) -> Option<i64> {
        self.mean_gap_us().filter(|gap| *gap <= BUSY_MAX_GAP_US)
    }

    /// Whether a silence on this stream says anything (see the module's docs).
    pub fn is_busy(&self) -> bool {
        self.busy_gap_us().is_some()
    }

    /// Whether `silence_ms` without an event contradicts the pace: only on a busy stream, and
    /// only past `floor_ms` and [`SILENCE_GAPS`] mean gaps.
    pub fn contradicts(&self, silence_ms: i64, floor_ms: i64) -> bool {
        self.busy_gap_us()
            .is_some_and(|gap| silence_ms >= floor_ms.max(SILENCE_GAPS * gap / 1_000))
    }
}

/// The longest wait between two attempts after failures (the backoff's ceiling).
pub const MAX_BACKOFF_MS: i64 = 300_000;

/// How long the listener waits after `failures` failed connections in a row, given `urls`
/// endpoints to fail over between: the next URL is tried after `retry_ms`; each full round of
/// the URLs that failed doubles it, up to five minutes.
pub fn backoff_ms(retry_ms: i64, urls: usize, failures: u32) -> i64 {
    let rounds = failures.saturating_sub(1) as usize / urls.max(1);
    (retry_ms << rounds.min(16)).min(MAX_BACKOFF_MS)
}

/// Which of `urls` endpoints the `attempt`-th connection uses: round robin.
pub fn url_index(attempt: usize, urls: usize) -> usize {
    attempt % urls.max(1)
}

/// How the listener runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Woken every `poll_interval_ms`: connect, read until caught up, record, disconnect.
    Poll,
    /// Connected all the time (one connection lasts at most `session_ms`, then the next one
    /// follows at once); the alarm is its watchdog.
    Live,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Poll => "poll",
            Mode::Live => "live",
        }
    }
}

/// How a connection ended. The first four are normal; the others fail over to the next URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Poll: a batch reached the moment the listener woke.
    CaughtUp,
    /// Poll: no frame for `quiet_ms`, on a stream whose silence says nothing (not known to be
    /// busy, or its last event recent enough for its pace).
    Quiet,
    /// `max_batches` written: go on in the next invocation, at once.
    Budget,
    /// `session_ms` elapsed: go on in the next invocation, at once.
    SessionOver,
    /// A busy stream went silent (live: no frame for `silent_ms` and its pace's gaps; poll: it
    /// stopped that far behind now): the instance is stuck.
    Silent,
    /// The server closed the connection (or it dropped).
    Closed(u16),
}

impl End {
    pub fn is_failure(&self) -> bool {
        matches!(self, End::Silent | End::Closed(_))
    }

    /// Whether reading should go on at once (there is more to read, or the mode is live).
    pub fn continues(&self, mode: Mode) -> bool {
        matches!(self, End::Budget | End::SessionOver) || mode == Mode::Live
    }

    pub fn label(&self) -> String {
        match self {
            End::CaughtUp => "caught up".into(),
            End::Quiet => "quiet".into(),
            End::Budget => "budget".into(),
            End::SessionOver => "session over".into(),
            End::Silent => "silent".into(),
            End::Closed(code) => format!("closed {code}"),
        }
    }
}

/// The listener's settings that shape one connection (docs/listener.md has their defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub mode: Mode,
    /// Frames per batch, at most.
    pub batch_max_events: usize,
    /// A frame waits at most this long before its batch is written.
    pub flush_ms: i64,
    /// Batches per connection, at most.
    pub max_batches: u32,
    /// One connection lasts at most this long.
    pub session_ms: i64,
    /// Poll: no frame for this long ends the connection (caught up, or stuck: see [`Pace`]).
    pub quiet_ms: i64,
    /// A busy stream silent this long (and for [`SILENCE_GAPS`] of its gaps) is stuck.
    pub silent_ms: i64,
}

/// What came from the socket, or that nothing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A text frame (a Jetstream event, not yet read).
    Text(String),
    /// A frame that is not text (counted and dropped by the caller; it still shows the
    /// connection is alive).
    Binary,
    /// The wait of [`Batcher::wait_ms`] ran out with nothing.
    Nothing,
}

/// One connection's reading state.
#[derive(Debug, Clone)]
pub struct Batcher {
    rules: Rules,
    started_ms: i64,
    /// Poll: a batch whose cursor reaches this has caught up.
    woke_us: i64,
    /// Where the stream is, in event time: where it started, then the last batch's cursor.
    position_us: i64,
    pace: Pace,
    buffer: Vec<String>,
    first_buffered_ms: i64,
    last_frame_ms: i64,
    batches: u32,
}

impl Batcher {
    /// A connection that starts at `now_ms` from the cursor `start_us`, on a network of `pace`.
    pub fn new(rules: Rules, now_ms: i64, start_us: i64, pace: Pace) -> Batcher {
        Batcher {
            rules,
            started_ms: now_ms,
            woke_us: now_ms * 1_000,
            position_us: start_us,
            pace,
            buffer: Vec::new(),
            first_buffered_ms: 0,
            last_frame_ms: now_ms,
            batches: 0,
        }
    }

    /// How long to wait for the next frame before telling the batcher that none came.
    pub fn wait_ms(&self) -> i64 {
        if self.buffer.is_empty() {
            TICK_MS.min(self.rules.flush_ms)
        } else {
            LULL_MS.min(self.rules.flush_ms)
        }
    }

    /// Takes in what happened at `now_ms`; returns the frames to record now, if a batch is due.
    pub fn on(&mut self, now_ms: i64, event: Event) -> Option<Vec<String>> {
        let lulled = event == Event::Nothing;
        match event {
            Event::Text(text) => {
                self.last_frame_ms = now_ms;
                if self.buffer.is_empty() {
                    self.first_buffered_ms = now_ms;
                }
                self.buffer.push(text);
            }
            Event::Binary => self.last_frame_ms = now_ms,
            Event::Nothing => {}
        }
        let due = !self.buffer.is_empty()
            && (lulled
                || self.buffer.len() >= self.rules.batch_max_events
                || now_ms - self.first_buffered_ms >= self.rules.flush_ms);
        due.then(|| std::mem::take(&mut self.buffer))
    }

    /// A batch was recorded, its cursor reaching `covered_us` with `events` valid events (if it
    /// had any): whether that ends the connection.
    pub fn recorded(&mut self, covered_us: Option<i64>, events: u64) -> Option<End> {
        self.batches += 1;
        if let Some(covered) = covered_us {
            self.pace.observe(covered - self.position_us, events);
            self.position_us = self.position_us.max(covered);
        }
        if self.rules.mode == Mode::Poll && covered_us.is_some_and(|c| c >= self.woke_us) {
            return Some(End::CaughtUp);
        }
        (self.batches >= self.rules.max_batches).then_some(End::Budget)
    }

    /// Whether the connection ends at `now_ms` for its age or its silence.
    pub fn stop(&self, now_ms: i64) -> Option<End> {
        if now_ms - self.started_ms >= self.rules.session_ms {
            return Some(End::SessionOver);
        }
        let silence = now_ms - self.last_frame_ms;
        let silent_ms = self.rules.silent_ms;
        match self.rules.mode {
            Mode::Poll if silence >= self.rules.quiet_ms => {
                let behind_ms = now_ms - self.position_us / 1_000;
                Some(match self.pace.contradicts(behind_ms, silent_ms) {
                    true => End::Silent,
                    false => End::Quiet,
                })
            }
            Mode::Live if self.pace.contradicts(silence, silent_ms) => Some(End::Silent),
            _ => None,
        }
    }

    /// The network's pace as this connection leaves it (kept for the next).
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// What was read and not yet handed out: recorded at the end, however the connection ended.
    pub fn take_rest(&mut self) -> Vec<String> {
        std::mem::take(&mut self.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        mode: Mode::Poll,
        batch_max_events: 3,
        flush_ms: 100,
        max_batches: 2,
        session_ms: 10_000,
        quiet_ms: 2_000,
        silent_ms: 5_000,
    };

    /// A connection on a network whose pace is not known yet, from the moment it woke.
    fn quiet(rules: Rules, now_ms: i64) -> Batcher {
        Batcher::new(rules, now_ms, now_ms * 1_000, Pace::default())
    }

    fn text(n: u32) -> Event {
        Event::Text(format!("frame {n}"))
    }

    #[test]
    fn a_lone_frame_is_written_at_the_first_lull_not_held_for_flush_ms() {
        let mut batcher = quiet(RULES, 0);
        assert_eq!(
            batcher.wait_ms(),
            100,
            "nothing buffered: a tick (capped by flush_ms)"
        );
        assert_eq!(batcher.on(10, text(1)), None);
        assert_eq!(batcher.wait_ms(), LULL_MS, "something buffered: a lull");
        assert_eq!(batcher.on(35, Event::Nothing), Some(vec!["frame 1".into()]));
        assert_eq!(batcher.on(300, Event::Nothing), None, "nothing to write");
        let long = Rules {
            flush_ms: 1_000,
            ..RULES
        };
        assert_eq!(quiet(long, 0).wait_ms(), TICK_MS);
    }

    #[test]
    fn a_full_batch_is_written_at_once() {
        let mut batcher = quiet(RULES, 0);
        assert_eq!(batcher.on(1, text(1)), None);
        assert_eq!(batcher.on(2, text(2)), None);
        let batch = batcher.on(3, text(3)).unwrap();
        assert_eq!(batch, ["frame 1", "frame 2", "frame 3"]);
        assert_eq!(batcher.on(4, text(4)), None, "the next batch starts empty");
    }

    #[test]
    fn a_stream_without_pauses_is_written_every_flush_ms() {
        let rules = Rules {
            batch_max_events: 1_000,
            ..RULES
        };
        let mut batcher = quiet(rules, 0);
        let mut written = Vec::new();
        for t in (10..=250).step_by(10) {
            if let Some(batch) = batcher.on(t, text(t as u32)) {
                written.push((t, batch.len()));
            }
        }
        // First frame at 10 -> due at 110 (11 frames); next first at 120 -> due at 220.
        assert_eq!(written, [(110, 11), (220, 11)]);
    }

    #[test]
    fn a_poll_stops_when_a_batch_reaches_the_moment_it_woke() {
        let mut batcher = quiet(RULES, 1_000);
        assert_eq!(batcher.recorded(Some(999_999), 1), None, "still behind");
        let mut batcher = quiet(RULES, 1_000);
        assert_eq!(batcher.recorded(Some(1_000_000), 1), Some(End::CaughtUp));
        let live = Rules {
            mode: Mode::Live,
            ..RULES
        };
        let mut batcher = quiet(live, 1_000);
        assert_eq!(
            batcher.recorded(Some(2_000_000), 1),
            None,
            "live never catches up"
        );
    }

    #[test]
    fn max_batches_ends_the_connection_with_budget() {
        let mut batcher = quiet(RULES, 0);
        assert_eq!(batcher.recorded(None, 1), None);
        assert_eq!(batcher.recorded(None, 1), Some(End::Budget));
    }

    #[test]
    fn session_ms_ends_any_connection_even_one_that_is_busy() {
        let mut batcher = quiet(RULES, 0);
        batcher.on(9_999, text(1));
        assert_eq!(batcher.stop(9_999), None);
        assert_eq!(batcher.stop(10_000), Some(End::SessionOver));
        assert_eq!(
            batcher.take_rest(),
            ["frame 1"],
            "what was read is still recorded"
        );
        assert!(batcher.take_rest().is_empty());
    }

    /// On a stream not known to be busy, silence is quiet: a poll ends `Quiet`, a live
    /// connection reads on until its session is over (no failure every `silent_ms` on a quiet
    /// local network).
    #[test]
    fn on_a_quiet_network_silence_is_not_a_failure() {
        let mut poll = quiet(RULES, 0);
        assert_eq!(poll.stop(1_999), None);
        poll.on(1_500, Event::Binary);
        assert_eq!(
            poll.stop(3_000),
            None,
            "a binary frame shows the stream is alive"
        );
        assert_eq!(poll.stop(3_500), Some(End::Quiet));
        let live = Rules {
            mode: Mode::Live,
            ..RULES
        };
        let live = quiet(live, 0);
        assert_eq!(live.stop(9_999), None, "silent_ms alone says nothing");
        assert_eq!(live.stop(10_000), Some(End::SessionOver));
    }

    /// One event a millisecond, as the public network's account and identity events come.
    const BUSY: Pace = Pace {
        events: 5_000,
        span_us: 5_000_000,
    };

    #[test]
    fn a_busy_stream_that_goes_silent_is_stuck_live_and_in_a_poll() {
        let live = Rules {
            mode: Mode::Live,
            ..RULES
        };
        let mut live = Batcher::new(live, 0, 0, BUSY);
        live.on(1_000, text(1));
        assert_eq!(live.stop(5_999), None);
        assert_eq!(
            live.stop(6_000),
            Some(End::Silent),
            "silent_ms after the last frame"
        );

        // A poll that read up to a moment ago and then heard nothing: caught up.
        let poll = Batcher::new(RULES, 100_000, 99_000_000, BUSY);
        assert_eq!(poll.stop(102_000), Some(End::Quiet));
        // One whose stream stopped (or never started) far behind now: the instance is stuck.
        let poll = Batcher::new(RULES, 100_000, 60_000_000, BUSY);
        assert_eq!(poll.stop(102_000), Some(End::Silent));
        // The batches it records move it on: once it reached a moment ago, it is caught up.
        let mut poll = Batcher::new(RULES, 100_000, 60_000_000, BUSY);
        poll.on(100_100, text(1));
        poll.on(100_200, Event::Nothing);
        assert_eq!(poll.recorded(Some(99_500_000), 1), None);
        assert_eq!(poll.stop(102_300), Some(End::Quiet));
    }

    #[test]
    fn a_slower_busy_stream_gets_a_hundred_of_its_gaps() {
        // An event every half second: silent after 50 s, not after silent_ms (5 s).
        let slow = Pace {
            events: 2_000,
            span_us: 1_000_000_000 / 1_000 * 1_000,
        };
        assert_eq!(slow.mean_gap_us(), Some(500_000));
        assert!(!slow.contradicts(49_999, 5_000));
        assert!(slow.contradicts(50_000, 5_000));
    }

    #[test]
    fn a_pace_is_busy_only_after_enough_events_close_enough_together() {
        let mut pace = Pace::default();
        // The burst a local network makes at start (accounts created within milliseconds).
        pace.observe(50_000, 12);
        assert!(!pace.is_busy(), "a dozen events say nothing");
        assert!(!pace.contradicts(3_600_000, 1_000));
        pace.observe(950_000, 988);
        assert!(pace.is_busy(), "{pace:?}");
        // A thousand events two seconds apart: a quiet network.
        let sparse = Pace {
            events: 1_000,
            span_us: 2_000_000_000,
        };
        assert!(!sparse.is_busy());
        // The window: past ten minutes of event time, the counts are halved (the rate stays).
        let mut long = Pace::default();
        long.observe(PACE_WINDOW_US, 600_000);
        long.observe(2, 2);
        assert!(long.span_us <= PACE_WINDOW_US, "{long:?}");
        assert!(
            long.mean_gap_us()
                .is_some_and(|gap| (999..=1_000).contains(&gap)),
            "{long:?}"
        );
        // Time running backwards (a rewound read) adds events, never a negative span.
        let mut rewound = Pace::default();
        rewound.observe(-5_000_000, 10);
        assert_eq!(rewound.span_us, 0);
    }

    #[test]
    fn backoff_tries_every_url_before_doubling() {
        let waits: Vec<i64> = (1..=9).map(|f| backoff_ms(5_000, 4, f)).collect();
        assert_eq!(
            waits,
            [5_000, 5_000, 5_000, 5_000, 10_000, 10_000, 10_000, 10_000, 20_000]
        );
        assert_eq!(backoff_ms(5_000, 1, 1), 5_000);
        assert_eq!(backoff_ms(5_000, 1, 2), 10_000);
        assert_eq!(backoff_ms(5_000, 1, 7), MAX_BACKOFF_MS, "capped");
        assert_eq!(
            backoff_ms(5_000, 1, u32::MAX),
            MAX_BACKOFF_MS,
            "no overflow"
        );
        assert_eq!(backoff_ms(5_000, 0, 3), 20_000, "no URLs is one");
        assert_eq!(url_index(5, 4), 1, "round robin");
        assert_eq!(url_index(3, 0), 0);
    }

    #[test]
    fn ends_say_whether_they_fail_over_and_whether_reading_goes_on() {
        for end in [End::CaughtUp, End::Quiet, End::Budget, End::SessionOver] {
            assert!(!end.is_failure(), "{end:?}");
        }
        for end in [End::Silent, End::Closed(1006)] {
            assert!(end.is_failure(), "{end:?}");
        }
        assert!(End::Budget.continues(Mode::Poll));
        assert!(End::SessionOver.continues(Mode::Poll));
        assert!(!End::CaughtUp.continues(Mode::Poll));
        assert!(!End::Quiet.continues(Mode::Poll));
        assert!(End::Quiet.continues(Mode::Live));
        assert_eq!(End::Closed(1011).label(), "closed 1011");
        assert_eq!(Mode::Live.name(), "live");
    }
}
