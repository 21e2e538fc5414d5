// Preview tapgate's pages without the Rust server:
//
//   node tests/browser/preview.mjs [port]      → http://localhost:8099/.tapgate/login
//
// A stand-in that serves src/pages/assets with the real CSP and fakes the JSON
// API (it checks nothing: any credential "works"). For working on the look and
// the browser-side flow only; the real contract is tested by e2e.test.mjs.
// Error pages: /.tapgate/preview/error. Failing API calls: add ?fail=1 to a page.

import http from 'node:http';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

const assets = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'pages', 'assets');
const port = Number(process.argv[2] || process.env.PORT || 8099);
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);
let failNext = false;

const pages = {
  '/.tapgate/login': 'login.html',
  '/.tapgate/register': 'register.html',
  '/.tapgate/account': 'account.html',
};

function send(res, status, type, body, extra = {}) {
  res.writeHead(status, { 'Content-Type': type, 'Content-Security-Policy': CSP, 'Cache-Control': 'no-store', ...extra });
  res.end(body);
}
const json = (res, status, obj, extra) => send(res, status, 'application/json', JSON.stringify(obj), extra);
const apiError = (res, status, error, message) =>
  json(res, status, { error, message, request_id: crypto.randomBytes(8).toString('hex') });

function signedIn(req) {
  return /(^|;\s*)tapgate_session=ok/.test(req.headers.cookie || '');
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  if (url.searchParams.get('fail')) failNext = true;
  let body = '';
  for await (const chunk of req) body += chunk;

  if (pages[url.pathname]) {
    return send(res, 200, 'text/html; charset=utf-8', await readFile(path.join(assets, pages[url.pathname])));
  }
  if (url.pathname === '/.tapgate/static/tapgate.js') return send(res, 200, 'text/javascript', await readFile(path.join(assets, 'tapgate.js')));
  if (url.pathname === '/.tapgate/static/tapgate.css') return send(res, 200, 'text/css', await readFile(path.join(assets, 'tapgate.css')));
  if (url.pathname === '/.tapgate/preview/error') {
    const fill = { title: 'Access denied', message: 'Your roles (member) do not include one this page needs (admin). Ask an administrator for access.', request_id: '01J9Z7Q4K8M2', action_href: '/', action_label: 'Back to the site' };
    let html = await readFile(path.join(assets, 'error.html'), 'utf8');
    for (const [k, v] of Object.entries(fill)) html = html.replaceAll(`{{${k}}}`, v);
    return send(res, 403, 'text/html; charset=utf-8', html);
  }

  if (url.pathname.startsWith('/.tapgate/api/') || url.pathname === '/.tapgate/logout') {
    if (failNext && req.method === 'POST' && url.pathname.endsWith('/verify')) {
      failNext = false;
      return apiError(res, 400, 'ceremony-expired', 'This sign-in attempt took too long and expired. Try again.');
    }
    switch (url.pathname) {
      case '/.tapgate/api/register/options':
        if (!JSON.parse(body || '{}').invite) return apiError(res, 401, 'invite-missing', 'This page needs the invite link you were sent.');
        return json(res, 200, {
          publicKey: {
            rp: { name: 'tapgate preview', id: 'localhost' },
            user: { id: b64url(crypto.randomBytes(16)), name: 'ada@example.com', displayName: 'Ada Lovelace' },
            challenge: b64url(crypto.randomBytes(32)),
            pubKeyCredParams: [{ type: 'public-key', alg: -7 }, { type: 'public-key', alg: -257 }],
            timeout: 300000,
            authenticatorSelection: { residentKey: 'required', userVerification: 'preferred' },
            attestation: 'none',
          },
          ceremony: 'preview',
          invite: { email: 'ada@example.com', roles: ['admin'] },
        });
      case '/.tapgate/api/register/verify':
      case '/.tapgate/api/login/verify':
        return json(res, 200, { redirect: '/.tapgate/account' }, { 'Set-Cookie': 'tapgate_session=ok; Path=/; HttpOnly; SameSite=Lax' });
      case '/.tapgate/api/login/options':
        return json(res, 200, {
          publicKey: { challenge: b64url(crypto.randomBytes(32)), rpId: 'localhost', timeout: 300000, userVerification: 'preferred' },
          ceremony: 'preview',
        });
      case '/.tapgate/api/me':
        if (!signedIn(req)) return apiError(res, 401, 'user-unauthenticated', 'Sign in first.');
        return json(res, 200, {
          subject: 'usr_7f3c2a', email: 'ada@example.com', display_name: 'Ada Lovelace', roles: ['admin', 'member'], auth_time: now() - 300,
          credentials: [
            { id: 'a1', nickname: 'Work laptop', created: now() - 86400 * 40, last_used: now() - 300, synced: true, aaguid: 'ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4' },
            { id: 'b2', nickname: 'Blue security key', created: now() - 86400 * 39, last_used: null, synced: false, aaguid: 'cb69481e-8ff7-4039-93ec-0a2729a154a8' },
          ],
        });
      case '/.tapgate/logout':
        return json(res, 200, { redirect: '/.tapgate/login' }, { 'Set-Cookie': 'tapgate_session=; Path=/; Max-Age=0' });
      default:
        return apiError(res, 404, 'not-found', 'No such API.');
    }
  }

  if (!signedIn(req)) {
    res.writeHead(302, { Location: `/.tapgate/login?rd=${encodeURIComponent(url.pathname + url.search)}` });
    return res.end();
  }
  return json(res, 200, { app: 'preview', path: url.pathname });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`tapgate page preview on http://localhost:${port}/.tapgate/login (register: /.tapgate/register?invite=x, account: /.tapgate/account, error: /.tapgate/preview/error)`);
});
