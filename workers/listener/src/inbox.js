// The frames of one Jetstream connection, gathered on the JavaScript side of the listener
// (workers/listener/src/inbox.rs says why). Text frames wait in an array until the listener takes
// them all at once, joined by SEPARATOR; binary frames are only counted; a close or an error is
// kept until the frames before it were taken.

// A record separator: JSON text never holds one unescaped, so it cannot end a valid frame early.
const SEPARATOR = "\x1e";
// The listener is woken once this many frames wait...
const WAKE_FRAMES = 256;
// ...or this long (ms) after the first of them came: a catch-up's frames come a few at a time,
// and waking the listener for each cost as much as the frames saved.
const WAKE_MS = 2;

export class Inbox {
  constructor(socket) {
    this.socket = socket;
    this.frames = [];
    this.binary = 0;
    this.closed = null;
    this.failure = null;
    this.waiting = null;
    this.wake = null;
    this.timer = null;
    this.onMessage = (event) => {
      let data = event.data;
      if (typeof data === "string") {
        // Such a frame is not JSON anyway: it stays one frame, and is dropped as one.
        if (data.includes(SEPARATOR)) data = data.replaceAll(SEPARATOR, "\ufffd");
        this.frames.push(data);
      } else {
        this.binary += 1;
      }
      if (this.frames.length >= WAKE_FRAMES) this.ring();
      else this.ringSoon();
    };
    this.onClose = (event) => {
      this.closed = { code: event.code, reason: String(event.reason ?? "") };
      this.ring();
    };
    this.onError = (event) => {
      this.failure = String(event.error ?? event.message ?? "WebSocket error");
      this.ring();
    };
    socket.addEventListener("message", this.onMessage);
    socket.addEventListener("close", this.onClose);
    socket.addEventListener("error", this.onError);
  }

  ringSoon() {
    if (this.wake && this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.ring();
      }, WAKE_MS);
    }
  }

  ring() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      this.waiting = null;
      wake();
    }
  }

  // Whether anything waits to be taken.
  pending() {
    return this.frames.length > 0 || this.binary > 0 || this.closed !== null || this.failure !== null;
  }

  // A promise that settles once something waits (the same one until it does).
  ready() {
    if (this.pending()) return Promise.resolve();
    if (!this.waiting) this.waiting = new Promise((resolve) => (this.wake = resolve));
    return this.waiting;
  }

  // The text frames received since the last call, joined by SEPARATOR; undefined if none.
  takeFrames() {
    if (this.frames.length === 0) return undefined;
    const text = this.frames.length === 1 ? this.frames[0] : this.frames.join(SEPARATOR);
    this.frames = [];
    return text;
  }

  // The binary frames received since the last call.
  takeBinary() {
    const count = this.binary;
    this.binary = 0;
    return count;
  }

  closeCode() {
    return this.closed === null ? undefined : this.closed.code;
  }

  closeReason() {
    return this.closed === null ? undefined : this.closed.reason;
  }

  failed() {
    return this.failure === null ? undefined : this.failure;
  }

  // Stops listening (the connection is over).
  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.socket.removeEventListener("message", this.onMessage);
    this.socket.removeEventListener("close", this.onClose);
    this.socket.removeEventListener("error", this.onError);
  }
}
