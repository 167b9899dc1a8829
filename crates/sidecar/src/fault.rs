//! Fault injection: what a misbehaving Jetstream does to a connection, chosen by flags so that the
//! listener's tests can show it survives each one.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Faults applied to each subscriber connection (or to the first `connections` of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// After this many frames, stop sending (and stop answering pings) but keep the socket open.
    pub stall_after: Option<u64>,
    /// After this many frames, close the connection: abruptly (TCP closed, no close frame) unless
    /// `close_code` is set, in which case a close frame with that code is sent first.
    pub close_after: Option<u64>,
    pub close_code: Option<u16>,
    /// Wait this long before every frame.
    pub delay: Option<Duration>,
    /// Send every Nth frame twice.
    pub duplicate_every: Option<u64>,
    /// Send frames in reversed order within consecutive windows of this many frames.
    pub reorder_window: Option<usize>,
    /// Cut every Nth frame in half (it is then not valid JSON).
    pub truncate_every: Option<u64>,
    /// Before every Nth frame written, send its bytes as a binary frame too (Jetstream sends
    /// binary only when asked to compress; the text frame that follows is the real one).
    pub binary_every: Option<u64>,
    /// Apply the faults to the first N connections only (counted from 1); all when `None`.
    pub connections: Option<u64>,
}

impl Faults {
    pub fn any(&self) -> bool {
        *self != Faults::default() && self.connections != Some(0)
    }

    /// The fault state for the connection with this number (1-based).
    pub fn for_connection(&self, number: u64) -> FaultState {
        let active = self.any() && self.connections.is_none_or(|n| number <= n);
        FaultState {
            faults: if active {
                self.clone()
            } else {
                Faults::default()
            },
            seen: 0,
            sent: 0,
            held: Vec::new(),
        }
    }
}

/// What the writer does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Send,
    Stall,
    Close(Option<u16>),
}

/// Per-connection fault bookkeeping.
#[derive(Debug)]
pub struct FaultState {
    faults: Faults,
    /// Frames offered to `shape`.
    seen: u64,
    /// Frames actually written.
    sent: u64,
    held: Vec<Utf8Bytes>,
}

impl FaultState {
    /// Turns one wanted frame into what goes on the wire (possibly nothing yet, when held back
    /// for reordering, or two copies).
    pub fn shape(&mut self, text: Utf8Bytes, out: &mut Vec<Utf8Bytes>) {
        self.seen += 1;
        let n = self.seen;
        let text = match self.faults.truncate_every {
            Some(every) if every > 0 && n.is_multiple_of(every) => {
                let s = text.as_str();
                Utf8Bytes::from(s[..s.floor_char_boundary(s.len() / 2)].to_owned())
            }
            _ => text,
        };
        let copies = match self.faults.duplicate_every {
            Some(every) if every > 0 && n.is_multiple_of(every) => 2,
            _ => 1,
        };
        match self.faults.reorder_window {
            Some(window) if window > 1 => {
                for _ in 0..copies {
                    self.held.push(text.clone());
                }
                if self.held.len() >= window {
                    self.flush(out);
                }
            }
            _ => {
                for _ in 0..copies {
                    out.push(text.clone());
                }
            }
        }
    }

    /// Releases frames held for reordering (at the end of each batch, so none wait forever).
    pub fn flush(&mut self, out: &mut Vec<Utf8Bytes>) {
        out.extend(self.held.drain(..).rev());
    }

    /// Asked before each frame is written.
    pub fn next(&self) -> Next {
        if self.faults.stall_after.is_some_and(|n| self.sent >= n) {
            return Next::Stall;
        }
        if self.faults.close_after.is_some_and(|n| self.sent >= n) {
            return Next::Close(self.faults.close_code);
        }
        Next::Send
    }

    /// Whether a binary copy goes before the frame about to be written.
    pub fn binary_before(&self) -> bool {
        self.faults
            .binary_every
            .is_some_and(|every| every > 0 && (self.sent + 1).is_multiple_of(every))
    }

    pub fn delay(&self) -> Option<Duration> {
        self.faults.delay
    }

    pub fn sent_one(&mut self) {
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(faults: Faults, n: u64) -> Vec<String> {
        let mut state = faults.for_connection(1);
        let mut out = Vec::new();
        for i in 1..=n {
            state.shape(Utf8Bytes::from(format!("frame{i:02}")), &mut out);
        }
        state.flush(&mut out);
        out.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn duplicate_reorder_truncate() {
        let dup = shaped(
            Faults {
                duplicate_every: Some(2),
                ..Faults::default()
            },
            3,
        );
        assert_eq!(dup, ["frame01", "frame02", "frame02", "frame03"]);
        let reorder = shaped(
            Faults {
                reorder_window: Some(2),
                ..Faults::default()
            },
            5,
        );
        assert_eq!(
            reorder,
            ["frame02", "frame01", "frame04", "frame03", "frame05"]
        );
        let cut = shaped(
            Faults {
                truncate_every: Some(3),
                ..Faults::default()
            },
            3,
        );
        assert_eq!(cut, ["frame01", "frame02", "fra"]);
    }

    #[test]
    fn thresholds_and_connection_scope() {
        let faults = Faults {
            close_after: Some(2),
            close_code: Some(1011),
            connections: Some(1),
            ..Faults::default()
        };
        let mut first = faults.for_connection(1);
        assert_eq!(first.next(), Next::Send);
        first.sent_one();
        first.sent_one();
        assert_eq!(first.next(), Next::Close(Some(1011)));
        let mut second = faults.for_connection(2);
        second.sent_one();
        second.sent_one();
        assert_eq!(
            second.next(),
            Next::Send,
            "only the first connection is faulty"
        );
        let binary = Faults {
            binary_every: Some(2),
            ..Faults::default()
        };
        let mut state = binary.for_connection(1);
        let mut before = Vec::new();
        for _ in 0..4 {
            before.push(state.binary_before());
            state.sent_one();
        }
        assert_eq!(before, [false, true, false, true]);
        let stall = Faults {
            stall_after: Some(0),
            ..Faults::default()
        }
        .for_connection(9);
        assert_eq!(stall.next(), Next::Stall);
    }
}
