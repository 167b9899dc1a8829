// Preloaded with `node --require`. Servers that do not say where to listen listen on 127.0.0.1
// only (dev-env's PLC and PDS would otherwise listen on every interface).
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  const isPort = typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first));
  if (isPort && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  } else if (first && typeof first === 'object' && first.port !== undefined && !first.host && !first.path) {
    args[0] = { ...first, host: '127.0.0.1' };
  } else if (args.length === 0 || typeof first === 'function') {
    args.unshift(0, '127.0.0.1');
  }
  return listen.apply(this, args);
};

// Names this process alone resolves to 127.0.0.1 (`DEVNET_HOSTS`, comma-separated): the test
// harness serves the app as a confidential OAuth client at `https://statusphere.internal:<port>`,
// and the PDS must fetch its client metadata there. Node's fetch (and the npm undici the PDS uses)
// connect through `dns.lookup`, looked up at connection time, so replacing it here reaches both.
// Every other name resolves as before. The certificate's CA comes from `NODE_EXTRA_CA_CERTS`.
const dns = require('node:dns');

const hosts = new Set(
  (process.env.DEVNET_HOSTS || '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean),
);
if (hosts.size > 0) {
  const lookup = dns.lookup;
  dns.lookup = function (hostname, options, callback) {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    if (!hosts.has(String(hostname).toLowerCase())) {
      return lookup.call(this, hostname, options, callback);
    }
    const opts = typeof options === 'number' ? { family: options } : options || {};
    if (opts.family === 6) {
      const error = new Error(`${hostname} has no IPv6 address here`);
      error.code = 'ENOTFOUND';
      return process.nextTick(() => callback(error));
    }
    process.nextTick(() =>
      opts.all ? callback(null, [{ address: '127.0.0.1', family: 4 }]) : callback(null, '127.0.0.1', 4),
    );
  };
}
