// Starts the local atproto network: an in-memory PLC directory and a PDS (from @atproto/dev-env),
// seeds demo accounts, prints one JSON line describing it all, and runs until SIGTERM/SIGINT.
//
//   node --require ./loopback.cjs start.mjs --plc-port 2582 --pds-port 2583 --data DIR \
//        [--accounts alice,bob] [--password PASSWORD] [--fresh-client-documents]
//
// --fresh-client-documents: the PDS fetches an OAuth client's metadata and JWKS on every use
// instead of keeping them 10 minutes. Test stacks restart on the same address with another key
// ring (a key rotation); a real authorization server would see the change 10 minutes later.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TestNetworkNoAppView } from '@atproto/dev-env';

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const plcPort = Number(option('plc-port', '2582'));
const pdsPort = Number(option('pds-port', '2583'));
const data = option('data', join(process.cwd(), '.devnet'));
const names = option('accounts', 'alice,bob').split(',').filter(Boolean);
const password = option('password', 'statusphere-dev');
const freshClientDocuments = process.argv.includes('--fresh-client-documents');
for (const dir of ['pds', 'blobs']) mkdirSync(join(data, dir), { recursive: true });

const network = await TestNetworkNoAppView.create({
  plc: { port: plcPort },
  pds: {
    port: pdsPort,
    hostname: 'localhost',
    dataDirectory: join(data, 'pds'),
    blobstoreDiskLocation: join(data, 'blobs'),
    // Said, not assumed (dev-env sets both today): the app's local https client is at a private
    // address on a custom port, which SSRF protection would refuse.
    devMode: true,
    disableSsrfProtection: true,
  },
});

if (freshClientDocuments) {
  const clients = network.pds.ctx.oauthProvider.clientManager;
  for (const field of ['jwks', 'metadataGetter']) {
    const getter = clients[field];
    if (typeof getter?.get !== 'function') {
      console.error(`--fresh-client-documents: this PDS has no clientManager.${field}.get`);
      process.exit(1);
    }
    clients[field] = { get: (key, options) => getter.get(key, { ...options, noCache: true }) };
  }
}

async function xrpc(method, body, token) {
  const response = await fetch(`${network.pds.url}/xrpc/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const json = await response.json().catch(() => ({}));
  return { status: response.status, json };
}

const accounts = [];
for (const name of names) {
  const handle = `${name}.test`;
  let result = await xrpc('com.atproto.server.createAccount', { handle, email: `${name}@example.test`, password });
  if (result.status !== 200) {
    // The account survives in a reused data directory: sign in instead.
    result = await xrpc('com.atproto.server.createSession', { identifier: handle, password });
  }
  if (result.status !== 200) {
    console.error(`cannot create or sign in ${handle}: ${JSON.stringify(result.json)}`);
    process.exit(1);
  }
  accounts.push({ handle, did: result.json.did, password });
}

console.log(JSON.stringify({ plc: network.plc.url, pds: network.pds.url, accounts }));

let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  await network.close().catch(() => {});
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
