// A publish's fan-out, run on the JavaScript side of a shard (workers/broker/src/fanout.rs says
// why): every open socket of the object gets every pack, in order.

// WebSocket.readyState of an open socket.
const OPEN = 1;

// Sends each of `texts` to each open socket the object holds. A socket whose send throws gets
// nothing more and is closed with `closeCode` and `closeReason`. Returns
// [open sockets, sockets that failed, then for each text the sockets that took it].
export function sendAll(state, texts, closeCode, closeReason) {
  const taken = new Array(texts.length).fill(0);
  let open = 0;
  let failed = 0;
  for (const socket of state.getWebSockets()) {
    if (socket.readyState !== OPEN) continue;
    open += 1;
    let i = 0;
    try {
      for (; i < texts.length; i += 1) {
        socket.send(texts[i]);
        taken[i] += 1;
      }
    } catch {
      failed += 1;
      try {
        socket.close(closeCode, closeReason);
      } catch {
        // Already closing: it gets nothing more either way.
      }
    }
  }
  return [open, failed, ...taken];
}
