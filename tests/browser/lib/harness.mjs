// Helpers for the browser tests: a free port, the `tapgate demo` child
// process, a recording upstream that verifies X-Tapgate-Assertion with jose,
// and a Chromium with a CDP virtual authenticator.
//
// Every child process started here is registered in `children` and killed on
// exit, whatever happens to the test.

import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const browserDir = path.resolve(here, '..');
export const repoRoot = path.resolve(browserDir, '..', '..');
export const artifactsDir = path.join(browserDir, 'artifacts');
export const tapgateBin = process.env.TAPGATE_BIN || path.join(repoRoot, 'target', 'debug', 'tapgate');

export const INVITE_LINE = /^http:\/\/localhost:\d+\/\.tapgate\/register\?invite=\S+$/;

const children = new Set();
function killAll() {
  for (const child of children) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function tempDir(prefix) {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

// Rejects after `ms` with `what` in the message, so a hang names its cause.
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ------------------------------------------------------------------ tapgate

// Starts `tapgate demo` in `cwd` and resolves once it has printed the admin
// invite URL on a line of its own. The returned object keeps all output for
// diagnostics.
export async function startTapgate({ cwd, port, upstream, extraEnv = {}, args = ['demo'] }) {
  const env = { ...process.env };
  // Every TAPGATE_* variable is configuration to tapgate (an unknown key is an
  // error), so none leaks in from the shell, e.g. run.sh's TAPGATE_BIN.
  for (const key of Object.keys(env)) if (key.startsWith('TAPGATE_')) delete env[key];
  Object.assign(env, { PORT: String(port) }, extraEnv);
  if (upstream) env.TAPGATE_UPSTREAM = upstream;
  if (!env.RUST_LOG) env.RUST_LOG = 'info';
  const child = spawn(tapgateBin, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const gate = {
    child,
    base: `http://localhost:${port}`,
    stdout: '',
    stderr: '',
    invite: null,
    exited: null,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) { children.delete(child); return; }
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 3000);
      await gone;
      clearTimeout(timer);
      children.delete(child);
    },
    // Last lines of output, for a failing test's diagnostics.
    tail(n = 40) {
      const lines = (s) => s.split('\n').slice(-n).join('\n');
      return `--- tapgate stdout (tail) ---\n${lines(gate.stdout)}\n--- tapgate stderr (tail) ---\n${lines(gate.stderr)}`;
    },
  };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { gate.stderr += d; });
  child.stdout.setEncoding('utf8');
  const invite = new Promise((resolve, reject) => {
    let pending = '';
    child.stdout.on('data', (d) => {
      gate.stdout += d;
      pending += d;
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const raw of lines) {
        const line = raw.replace(/\r$/, '').trim();
        if (INVITE_LINE.test(line) && !gate.invite) {
          gate.invite = line;
          resolve(line);
        }
      }
    });
    child.once('error', (err) => reject(new Error(`could not start ${tapgateBin}: ${err.message}`)));
    child.once('exit', (code, signal) => {
      gate.exited = { code, signal };
      reject(new Error(`tapgate demo exited (code ${code}, signal ${signal}) before printing an invite URL\n${gate.tail()}`));
    });
  });
  try {
    await withTimeout(invite, 30_000, `tapgate demo printing a line matching ${INVITE_LINE}\n${gate.tail()}`);
  } catch (err) {
    await gate.stop();
    throw err;
  }
  await waitForHttp(`${gate.base}/.tapgate/healthz`, 10_000).catch(() => { /* the invite line is the real readiness signal */ });
  return gate;
}

async function waitForHttp(url, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const res = await fetch(url);
      if (res.status < 500) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`no answer from ${url}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ------------------------------------------------------------------ upstream

// An upstream that answers every request with JSON describing what it
// received, after checking X-Tapgate-Assertion against tapgate's JWKS.
// `records` holds one entry per request: {method, url, headers, assertion}.
export async function startUpstream({ publicUrl }) {
  const jwks = createRemoteJWKSet(new URL(`${publicUrl}/.tapgate/jwks.json`), { cooldownDuration: 0 });
  const records = [];

  async function verify(token) {
    if (!token) return { present: false, ok: false, error: 'no X-Tapgate-Assertion header' };
    try {
      const header = decodeProtectedHeader(token);
      const { payload, protectedHeader } = await jwtVerify(token, jwks, {
        issuer: publicUrl,
        audience: publicUrl,
        algorithms: ['ES256'],
      });
      if (typeof payload.iat !== 'number' || typeof payload.exp !== 'number') {
        return { present: true, ok: false, error: 'iat/exp missing', claims: payload, header };
      }
      if (payload.exp - payload.iat > 300) {
        return { present: true, ok: false, error: `exp - iat = ${payload.exp - payload.iat} s > 300 s`, claims: payload, header };
      }
      if (!protectedHeader.kid) {
        return { present: true, ok: false, error: 'no kid in the JWT header', claims: payload, header };
      }
      return { present: true, ok: true, claims: payload, header: protectedHeader };
    } catch (err) {
      return { present: true, ok: false, error: `${err.code || err.name}: ${err.message}` };
    }
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const record = {
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        assertion: await verify(req.headers['x-tapgate-assertion']),
      };
      records.push(record);
      const body = JSON.stringify({ upstream: 'tapgate-browser-test', ...record }, null, 2);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    records,
    // The most recent request for `pathname` (query ignored), or undefined.
    last(pathname) {
      for (let i = records.length - 1; i >= 0; i--) {
        if (new URL(records[i].url, 'http://x').pathname === pathname) return records[i];
      }
      return undefined;
    },
    close: () => new Promise((resolve) => { server.closeAllConnections?.(); server.close(() => resolve()); }),
  };
}

// ------------------------------------------------------------------ browser

export const CHROMIUM = '/usr/bin/chromium';

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 30_000,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
}

// A fresh context (own cookies) with one page that has a virtual platform
// authenticator which answers every request as if the user touched it.
// Console errors, page errors and CSP violations are collected in `problems`.
export async function newPageWithAuthenticator(browser) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 }, locale: 'en-US' });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(15_000);
  const page = await context.newPage();
  const problems = [];
  await page.addInitScript(() => {
    // Chromium's virtual authenticator answers a conditional-UI (autofill)
    // request at once, as if the person had picked the passkey. Left on, the
    // login page would sign in before the test can press the button, so
    // autofill stays off unless a step turns it on (allowAutofill()).
    let autofill = null;
    try { autofill = localStorage.getItem('tapgate-test-autofill'); } catch { /* opaque origin */ }
    if (window.PublicKeyCredential && autofill !== 'on') {
      PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
    }
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || '(inline)'} at ${e.sourceFile}:${e.lineNumber}`);
    });
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push({ url: page.url(), kind: 'console', text: msg.text() });
  });
  page.on('pageerror', (err) => problems.push({ url: page.url(), kind: 'pageerror', text: String(err) }));
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const virtualKey = async (transport) => (await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport,
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  })).authenticatorId;
  const authenticatorId = await virtualKey('internal');
  return {
    context,
    page,
    problems,
    cdp,
    authenticatorId,
    async credentials(id = authenticatorId) {
      const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId: id });
      return credentials;
    },
    // Another authenticator (a second security key: USB); returns its id.
    // Chromium may ask any of them, so tests plug in one at a time
    // (unplug() the others).
    async plugIn(transport = 'usb') {
      return virtualKey(transport);
    },
    async unplug(id) {
      await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId: id });
    },
    // Puts credentials taken with credentials() back on authenticator `id`
    // (a key plugged in again).
    async restore(id, credentials) {
      for (const credential of credentials) {
        await cdp.send('WebAuthn.addCredential', { authenticatorId: id, credential });
      }
    },
    // Puts a resident ES256 credential on the authenticator that tapgate has
    // never seen. `id` is base64url; `userHandle` a string.
    async addCredential({ id, rpId, userHandle }) {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      await cdp.send('WebAuthn.addCredential', {
        authenticatorId,
        credential: {
          credentialId: Buffer.from(id, 'base64url').toString('base64'),
          isResidentCredential: true,
          rpId,
          privateKey: privateKey.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
          userHandle: Buffer.from(userHandle).toString('base64'),
          signCount: 0,
        },
      });
    },
    // Lets the login page use conditional UI (autofill) from the next load on.
    async allowAutofill(on = true) {
      await page.evaluate((v) => localStorage.setItem('tapgate-test-autofill', v), on ? 'on' : 'off');
    },
    // Problems seen while the page was on `pathPrefix` (e.g. '/.tapgate/login').
    problemsOn(pathPrefix) {
      return problems.filter((p) => {
        try { return new URL(p.url).pathname.startsWith(pathPrefix); } catch { return false; }
      });
    },
    close: () => context.close(),
  };
}

export async function screenshot(page, name) {
  await mkdir(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export async function removeDir(dir) {
  await rm(dir, { recursive: true, force: true }).catch(() => {});
}

// Runs named steps as subtests; once one fails the rest are skipped, so the
// report shows the first real failure instead of a cascade.
export async function steps(t, list, onFailure) {
  let broken = false;
  for (const [name, fn] of list) {
    await t.test(name, async (st) => {
      if (broken) { st.skip('an earlier step failed'); return; }
      try {
        await fn(st);
      } catch (err) {
        broken = true;
        if (onFailure) {
          try { st.diagnostic(await onFailure()); } catch { /* diagnostics are best effort */ }
        }
        throw err;
      }
    });
  }
  if (broken) throw new Error('a step failed (see above)');
}
