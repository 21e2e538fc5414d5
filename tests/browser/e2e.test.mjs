// End-to-end in a real browser: Debian's Chromium with a CDP virtual
// authenticator drives tapgate's pages against `tapgate demo`.
//
//   ./run.sh            (installs what is missing, then runs this file)
//
// Each test runs tapgate in its own temp dir (fresh SQLite, fresh admin
// invite) and its own browser context (fresh cookies, fresh authenticator).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  freePort, tempDir, removeDir, startTapgate, startUpstream, launchBrowser,
  newPageWithAuthenticator, screenshot, steps, withTimeout,
} from './lib/harness.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

const roles = (header) => (header || '').split(',').map((r) => r.trim()).filter(Boolean);
const escapeRe = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

// Polls the upstream's records until `pick` returns a record (bounded).
async function seenUpstream(upstream, pick, what) {
  return withTimeout((async () => {
    for (;;) {
      const hit = pick(upstream);
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 50));
    }
  })(), 5_000, `the upstream receiving ${what}`);
}

// The identity the upstream saw in `record`, checked against the contract
// (PRODUCT.md §3): identity headers, and a valid assertion that agrees with them.
function assertIdentity(record, { email } = {}) {
  const h = record.headers;
  assert.ok(h['x-tapgate-user'], `X-Tapgate-User missing; upstream saw headers ${JSON.stringify(h)}`);
  assert.ok(h['x-tapgate-email'], 'X-Tapgate-Email missing');
  if (email) assert.equal(h['x-tapgate-email'], email);
  assert.ok(roles(h['x-tapgate-roles']).includes('admin'), `X-Tapgate-Roles should contain admin, got ${h['x-tapgate-roles']}`);
  const a = record.assertion;
  assert.ok(a.present, 'X-Tapgate-Assertion missing');
  assert.ok(a.ok, `X-Tapgate-Assertion did not verify against the JWKS: ${a.error}`);
  const c = a.claims;
  assert.equal(c.sub, h['x-tapgate-user'], 'assertion sub must equal X-Tapgate-User');
  assert.equal(c.email, h['x-tapgate-email'], 'assertion email must equal X-Tapgate-Email');
  assert.ok(Array.isArray(c.roles) && c.roles.includes('admin'), `assertion roles should contain admin: ${JSON.stringify(c.roles)}`);
  assert.ok(Array.isArray(c.amr) && c.amr.length > 0, `assertion amr should be a non-empty array: ${JSON.stringify(c.amr)}`);
  assert.equal(typeof c.authn, 'object', `assertion authn should be an object: ${JSON.stringify(c.authn)}`);
  assert.equal(typeof c.authn.uv, 'boolean', 'authn.uv should be a boolean');
  assert.equal(typeof c.authn.synced, 'boolean', 'authn.synced should be a boolean');
  assert.equal(typeof c.auth_time, 'number', 'auth_time should be a number');
  assert.ok(c.cred, 'cred (credential id digest) missing');
  // The session cookie is tapgate's own: it must not reach the upstream.
  assert.ok(!/(^|;\s*)(__Host-)?tapgate_session=/.test(h.cookie || ''), `the upstream saw tapgate's session cookie: ${h.cookie}`);
  return { subject: h['x-tapgate-user'], email: h['x-tapgate-email'], claims: c };
}

test('passkey lifecycle through tapgate in front of an upstream', { timeout: 90_000 }, async (t) => {
  const dir = await tempDir('tapgate-browser-');
  const port = await freePort();
  const base = `http://localhost:${port}`;
  const upstream = await startUpstream({ publicUrl: base });
  let gate;
  let session;
  t.after(async () => {
    await session?.close();
    await gate?.stop();
    await upstream.close();
    await removeDir(dir);
  });

  const diagnose = async () => {
    const page = session?.page;
    let pageText = '';
    try { pageText = page ? (await page.locator('body').innerText()).slice(0, 2000) : ''; } catch { /* page gone */ }
    return [
      `page URL: ${page?.url()}`,
      `page text: ${pageText}`,
      `browser problems: ${JSON.stringify(session?.problems ?? [], null, 1)}`,
      `upstream saw: ${upstream.records.map((r) => `${r.method} ${r.url}`).join(', ')}`,
      gate ? gate.tail() : '(tapgate not started)',
    ].join('\n');
  };

  let me; // the identity after registration

  await steps(t, [
    ['tapgate demo starts and prints a single admin invite URL', async () => {
      gate = await startTapgate({ cwd: dir, port, upstream: upstream.url });
      assert.ok(gate.invite.startsWith(`${base}/.tapgate/register?invite=`), gate.invite);
      session = await newPageWithAuthenticator(browser);
    }],

    ['the register page shows the invite and has the house CSP', async () => {
      const { page } = session;
      const res = await page.goto(gate.invite);
      assert.equal(res.status(), 200);
      const csp = res.headers()['content-security-policy'] || '';
      assert.match(csp, /script-src 'self'/, `CSP: ${csp}`);
      assert.match(csp, /frame-ancestors 'none'/, `CSP: ${csp}`);
      await page.getByRole('heading', { name: 'Create your passkey' }).waitFor();
      const inviteRoles = page.locator('#invite-details dt:text-is("Roles") + dd');
      await inviteRoles.waitFor();
      assert.ok(roles(await inviteRoles.innerText()).includes('admin'), 'the invite is for the admin role');
      assert.equal(await page.getByLabel('Name for this passkey').inputValue(), 'My passkey');
      await screenshot(page, 'register');
    }],

    ['"Create passkey" registers and lands on the app with the identity', async () => {
      const { page } = session;
      await page.getByLabel('Name for this passkey').fill('Test authenticator');
      await page.getByRole('button', { name: 'Create passkey' }).click();
      await page.waitForURL(`${base}/`);
      assert.equal((await session.credentials()).length, 1, 'the virtual authenticator holds one credential');
      const record = await seenUpstream(upstream, (u) => u.last('/'), 'GET /');
      me = assertIdentity(record);
    }],

    ['client-sent identity headers never reach the upstream', async () => {
      const { page } = session;
      const echoed = await page.evaluate(async () => {
        const res = await fetch('/anything?spoof=1', {
          headers: {
            'X-Tapgate-User': 'mallory',
            'X-Tapgate-Email': 'mallory@evil.example',
            'X-Tapgate-Roles': 'admin,root',
            'X-Tapgate-Assertion': 'forged.jwt.value',
            'X-Goog-Authenticated-User-Email': 'accounts.google.com:mallory@evil.example',
            'X-Goog-Authenticated-User-Id': 'accounts.google.com:mallory',
            'X-Auth-Request-User': 'mallory',
            'X-Auth-Request-Email': 'mallory@evil.example',
          },
        });
        return { status: res.status, body: await res.json() };
      });
      assert.equal(echoed.status, 200);
      const record = await seenUpstream(upstream, (u) => u.last('/anything'), 'GET /anything');
      const seen = JSON.stringify(record.headers);
      assert.ok(!/mallory|evil\.example|forged\.jwt|root/.test(seen), `a client-sent identity header reached the upstream: ${seen}`);
      const who = assertIdentity(record);
      assert.equal(who.subject, me.subject);
      assert.equal(who.email, me.email);
      // The page got the upstream's answer, i.e. the same view.
      assert.equal(echoed.body.headers['x-tapgate-user'], me.subject);
    }],

    ['the account page shows who you are and your key', async () => {
      const { page } = session;
      await page.goto(`${base}/.tapgate/account`);
      await page.getByRole('heading', { name: 'Your account' }).waitFor();
      await page.locator('#identity').getByText(me.email, { exact: true }).waitFor();
      assert.ok(roles(await page.locator('#identity dt:text-is("Roles") + dd').innerText()).includes('admin'));
      const item = page.locator('#credential-list li');
      await item.first().waitFor();
      assert.equal(await item.count(), 1);
      await item.first().getByText('Test authenticator').waitFor();
      await screenshot(page, 'account');
    }],

    ['"Sign out" ends the session; the app then redirects to the login page', async () => {
      const { page } = session;
      await page.getByRole('button', { name: 'Sign out', exact: true }).click();
      await page.waitForURL(/\/\.tapgate\/login(\?|$)/);
      const before = upstream.records.length;
      const res = await page.goto(`${base}/`);
      assert.match(page.url(), new RegExp(`^${escapeRe(base)}/\\.tapgate/login\\?rd=(%2F|/)$`));
      assert.equal(res.status(), 200);
      const csp = res.headers()['content-security-policy'] || '';
      assert.match(csp, /default-src 'none'/, `CSP: ${csp}`);
      assert.equal(upstream.records.length, before, 'an unauthenticated request reached the upstream');
      await page.getByRole('heading', { name: 'Sign in' }).waitFor();
      await page.getByText('Your browser will ask for your passkey or security key').waitFor();
      // Let the conditional-UI request (if any) start, then look at the page.
      await page.waitForLoadState('networkidle').catch(() => {});
      await screenshot(page, 'login');
    }],

    ['"Sign in with a passkey" signs back in and returns to the app', async () => {
      const { page } = session;
      const before = upstream.records.length;
      const button = page.getByRole('button', { name: 'Sign in with a passkey' });
      // Conditional UI may legitimately finish first with a virtual authenticator.
      await Promise.race([
        button.click().catch((err) => { if (!page.url().startsWith(`${base}/.tapgate/login`)) return; throw err; }),
        page.waitForURL(`${base}/`),
      ]);
      await page.waitForURL(`${base}/`);
      const record = await seenUpstream(upstream, (u) => u.records.length > before && u.last('/'), 'GET / after sign-in');
      const who = assertIdentity(record);
      assert.equal(who.subject, me.subject, 'signed back in as the same user');
      assert.equal(who.email, me.email);
    }],

    ['passkey autofill (conditional UI) signs in too, and honours rd', async () => {
      const { page } = session;
      const out = await page.evaluate(async () => {
        const res = await fetch('/.tapgate/logout', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
        return { status: res.status, body: await res.json() };
      });
      assert.equal(out.status, 200, JSON.stringify(out.body));
      assert.equal(out.body.redirect, '/.tapgate/login');
      await session.allowAutofill();
      const before = upstream.records.length;
      await page.goto(`${base}/.tapgate/login?rd=${encodeURIComponent('/after-autofill?x=1')}`);
      // The virtual authenticator picks the passkey as soon as it is offered.
      await page.waitForURL(`${base}/after-autofill?x=1`);
      const record = await seenUpstream(upstream, (u) => u.records.length > before && u.last('/after-autofill'), 'GET /after-autofill');
      assert.equal(assertIdentity(record).subject, me.subject);
      await session.allowAutofill(false);
    }],

    ['the tapgate pages logged no console errors or CSP violations', async () => {
      assert.deepEqual(session.problemsOn('/.tapgate/login'), [], 'login page');
      assert.deepEqual(session.problemsOn('/.tapgate/'), [], 'tapgate pages');
    }],

    ['a used invite link shows the server\'s message and a request id', async () => {
      const { page } = session;
      await page.evaluate(() => fetch('/.tapgate/logout', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' }));
      await page.goto(gate.invite);
      const status = page.locator('#status.status--error');
      await status.waitFor();
      const text = await status.innerText();
      const token = new URL(gate.invite).searchParams.get('invite');
      const api = await page.evaluate(async (invite) => {
        const res = await fetch('/.tapgate/api/register/options', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ invite }),
        });
        return { status: res.status, body: await res.json() };
      }, token);
      assert.ok(api.status >= 400 && api.status < 500, `a used invite should be refused with a 4xx, got ${api.status}`);
      assert.match(api.body.error, /^[a-z0-9]+(-[a-z0-9]+)*$/, `error code should be kebab-case: ${api.body.error}`);
      assert.ok(api.body.request_id, 'the error carries a request_id');
      assert.ok(text.includes(api.body.message), `the page should show the server's message "${api.body.message}", shows: ${text}`);
      assert.match(text, /Request ID: \S+/, `the page should show a request id: ${text}`);
      assert.equal(await page.getByRole('button', { name: 'Create passkey' }).isVisible(), false, 'no point offering the button for a refused invite');
      await screenshot(page, 'register-used-invite');
    }],

    ['the login page on a 360 px phone in dark mode (screenshot)', async () => {
      const { page } = session;
      await page.setViewportSize({ width: 360, height: 740 });
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.goto(`${base}/.tapgate/login?rd=%2F`);
      await page.getByRole('button', { name: 'Sign in with a passkey' }).waitFor();
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      assert.equal(overflow, false, 'the login page scrolls sideways at 360 px');
      await screenshot(page, 'login-360-dark');
    }],
  ], diagnose);
});

test('the built-in echo app shows the signed-in user and the decoded assertion', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir('tapgate-browser-echo-');
  const port = await freePort();
  const base = `http://localhost:${port}`;
  let gate;
  let session;
  t.after(async () => {
    await session?.close();
    await gate?.stop();
    await removeDir(dir);
  });
  const diagnose = async () => {
    let pageText = '';
    try { pageText = (await session.page.locator('body').innerText()).slice(0, 2000); } catch { /* none */ }
    return `page URL: ${session?.page.url()}\npage text: ${pageText}\n${gate ? gate.tail() : ''}`;
  };

  await steps(t, [
    ['register from the invite', async () => {
      gate = await startTapgate({ cwd: dir, port });
      session = await newPageWithAuthenticator(browser);
      const { page } = session;
      await page.goto(gate.invite);
      await page.getByRole('button', { name: 'Create passkey' }).click();
      await page.waitForURL(`${base}/`);
    }],

    ['the echo page names the user and shows the assertion claims', async () => {
      const { page } = session;
      const me = await page.evaluate(async () => (await fetch('/.tapgate/api/me')).json());
      assert.ok(me.email, `/api/me: ${JSON.stringify(me)}`);
      assert.ok(me.subject, `/api/me: ${JSON.stringify(me)}`);
      assert.ok(me.roles.includes('admin'), `/api/me roles: ${JSON.stringify(me.roles)}`);
      const text = await page.locator('body').innerText();
      assert.ok(text.includes(me.email), `the echo page should show ${me.email}:\n${text}`);
      assert.ok(text.includes(me.subject), `the echo page should show the subject ${me.subject}`);
      for (const claim of ['iss', 'aud', 'sub', 'amr', 'authn', 'auth_time', 'exp']) {
        assert.match(text, new RegExp(`\\b${claim}\\b`), `the echo page should show the decoded claim ${claim}`);
      }
      await screenshot(page, 'echo');
    }],
  ], diagnose);
});

test('error paths: an unreachable upstream, an unknown passkey', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir('tapgate-browser-502-');
  const port = await freePort();
  const dead = await freePort(); // nothing listens here
  let gate;
  let session;
  t.after(async () => {
    await session?.close();
    await gate?.stop();
    await removeDir(dir);
  });
  const diagnose = async () => `page URL: ${session?.page.url()}\n${gate ? gate.tail() : ''}`;

  await steps(t, [
    ['register, then the app address answers 502 with the error page', async () => {
      gate = await startTapgate({ cwd: dir, port, upstream: `http://127.0.0.1:${dead}` });
      session = await newPageWithAuthenticator(browser);
      const { page } = session;
      await page.goto(gate.invite);
      const reply = page.waitForResponse((r) => new URL(r.url()).pathname === '/' && r.request().isNavigationRequest());
      await page.getByRole('button', { name: 'Create passkey' }).click();
      const res = await reply;
      assert.equal(res.status(), 502);
      assert.match(res.headers()['content-security-policy'] || '', /default-src 'none'/);
      const title = await page.locator('h1').innerText();
      assert.ok(title && !title.includes('{{'), `the error page has a filled-in title: ${title}`);
      const requestId = await page.locator('.request-id').innerText();
      assert.match(requestId, /^\S+$/, 'the error page shows a request id');
      const action = page.locator('main .actions a');
      assert.ok(await action.getAttribute('href'), 'the error page offers one action');
      const html = await page.content();
      assert.ok(!html.includes('{{'), 'no unfilled placeholders');
      assert.deepEqual(session.problems.filter((p) => !/status of 502/.test(p.text)), [], 'no console errors besides the 502 itself');
      await screenshot(page, 'error-502');
    }],

    ['a passkey the site does not know gets the server\'s message, and the browser is told', async () => {
      await session.close();
      session = await newPageWithAuthenticator(browser);
      const { page } = session;
      await page.addInitScript(() => {
        const PKC = window.PublicKeyCredential;
        if (PKC && typeof PKC.signalUnknownCredential === 'function') {
          const real = PKC.signalUnknownCredential.bind(PKC);
          window.__signalled = [];
          PKC.signalUnknownCredential = (o) => { window.__signalled.push(o); return real(o); };
        }
      });
      const stranger = Buffer.from('a key tapgate never saw').toString('base64url');
      await session.addCredential({ id: stranger, rpId: 'localhost', userHandle: 'nobody' });
      await page.goto(`${gate.base}/.tapgate/login?rd=%2F`);
      await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
      const status = page.locator('#status.status--error');
      await status.waitFor();
      const text = await status.innerText();
      assert.match(text, /Request ID: \S+/, `the error shows a request id: ${text}`);
      assert.ok(page.url().startsWith(`${gate.base}/.tapgate/login`), 'still on the login page');
      assert.equal(await page.getByRole('button', { name: 'Sign in with a passkey' }).isVisible(), true, 'the button is offered again');
      const signalled = await page.evaluate(() => window.__signalled);
      if (signalled) {
        assert.deepEqual(signalled.map((o) => o.credentialId), [stranger], 'signalUnknownCredential names the refused key');
      }
      await screenshot(page, 'login-unknown-key');
    }],
  ], diagnose);
});
