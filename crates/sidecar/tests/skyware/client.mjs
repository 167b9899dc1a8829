// @skyware/jetstream, a third-party Jetstream client, as a process the sidecar's tests drive
// (crates/sidecar/tests/skyware.rs). Its options come from the environment: ENDPOINT (the
// /subscribe URL), COLLECTIONS and DIDS (comma-separated, may be empty), CURSOR (unix µs, may be
// empty). Every event the client emits is written to stdout as one JSON line, in the order it
// emitted them; each line read from stdin is a JSON options payload passed to updateOptions
// (the client's `options_update` message). Errors go to stderr and end the process.
import { createInterface } from "node:readline";
import { Jetstream } from "@skyware/jetstream";

const list = (name) => (process.env[name] ?? "").split(",").filter((item) => item !== "");

const options = {
  endpoint: process.env.ENDPOINT,
  wantedCollections: list("COLLECTIONS"),
  wantedDids: list("DIDS"),
};
if (process.env.CURSOR) options.cursor = Number(process.env.CURSOR);

const jetstream = new Jetstream(options);
const print = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);
jetstream.on("commit", print);
jetstream.on("identity", print);
jetstream.on("account", print);
jetstream.on("error", (error) => {
  process.stderr.write(`jetstream client error: ${error?.stack ?? error}\n`);
  process.exit(1);
});
// The first line tells the test that the socket is open, so that what it publishes next is live.
jetstream.on("open", () => print({ open: true }));
jetstream.start();

createInterface({ input: process.stdin }).on("line", (line) => {
  jetstream.updateOptions(JSON.parse(line));
  print({ updated: true });
});
