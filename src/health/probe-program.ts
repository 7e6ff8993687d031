// The probe a node runs for a network health check, as a separate process so that it runs in the
// node's network namespace (`ip netns exec <ns> node -e PROGRAM <json>`). One JSON argument in
// (type, ip, port, send, expect, path, status, timeoutMs), one JSON line out ({ok, detail}).
// Answers are read up to 64 KiB. Plain CommonJS, no dependencies (runs from src/ and dist/ alike).
export const PROBE_PROGRAM = String.raw`
'use strict';
const net = require('node:net');
const dgram = require('node:dgram');
const http = require('node:http');
const p = JSON.parse(process.argv[process.argv.length - 1]);
const LIMIT = 65536;
const done = (ok, detail) => {
  process.stdout.write(JSON.stringify({ ok, detail: String(detail).slice(0, 300) }) + '\n');
  process.exit(0);
};
setTimeout(() => done(false, 'no answer within ' + p.timeoutMs / 1000 + ' s'), p.timeoutMs);
const wanted = (text) => p.expect === undefined || text.includes(p.expect);
const show = (text) => JSON.stringify(text.trim().slice(0, 120));
if (p.type === 'tcp') {
  let text = '';
  // Without expect, a connection is enough: closed politely (a reset can upset simple services).
  const s = net.connect(p.port, p.ip, () => {
    if (p.send !== undefined) s.write(p.send);
    if (p.expect === undefined) {
      s.end();
      s.on('close', () => done(true, 'connected'));
      setTimeout(() => done(true, 'connected'), 500);
    }
  });
  s.on('data', (d) => {
    text = (text + d).slice(0, LIMIT);
    if (p.expect !== undefined && wanted(text)) { s.end(); done(true, 'answered ' + show(text)); }
  });
  s.on('end', () => p.expect !== undefined && done(false, 'closed without ' + JSON.stringify(p.expect) + ' (got ' + show(text) + ')'));
  s.on('error', (e) => done(false, e.code || e.message));
} else if (p.type === 'udp') {
  const s = dgram.createSocket('udp4');
  s.on('message', (m) => {
    const text = m.toString().slice(0, LIMIT);
    done(wanted(text), wanted(text) ? 'answered ' + show(text) : 'answer without ' + JSON.stringify(p.expect) + ' (got ' + show(text) + ')');
  });
  s.on('error', (e) => done(false, e.code || e.message));
  const ask = () => s.send(p.send === undefined ? '\n' : p.send);
  s.connect(p.port, p.ip, () => { ask(); setInterval(ask, 1000); });
} else {
  const req = http.get({ host: p.ip, port: p.port, path: p.path || '/', agent: false }, (res) => {
    let body = '';
    res.on('data', (d) => (body = (body + d).slice(0, LIMIT)));
    res.on('end', () => {
      const code = res.statusCode;
      const statusOk = p.status === undefined ? code >= 200 && code < 400 : code === p.status;
      if (!statusOk) done(false, 'status ' + code + (p.status === undefined ? '' : ' (wanted ' + p.status + ')'));
      else if (!wanted(body)) done(false, 'status ' + code + ', body without ' + JSON.stringify(p.expect));
      else done(true, 'status ' + code);
    });
  });
  req.on('error', (e) => done(false, e.code || e.message));
}
`;
