// Step-up in a real browser (issue 3): a route with max_auth_age sends a
// person whose last key tap is too old back to sign in, with the reason
// shown, and then to the same URL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  freePort, tempDir, startTapgate, launchBrowser, newPageWithAuthenticator, screenshot, removeDir, steps,
} from './lib/harness.mjs';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

const POLICY = `
roles = ["admin", "member"]

[[route]]
path = "/admin/"
allow_roles = ["admin"]
max_auth_age = "10s"

[[route]]
path = "/"
allow_roles = ["admin", "member"]
`;

test('an old tap on a max_auth_age route steps up and comes back to the same URL', { timeout: 90_000 }, async (t) => {
  const dir = await tempDir('tapgate-browser-stepup-');
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
    ['register from the invite; a fresh tap opens the admin route', async () => {
      await writeFile(path.join(dir, 'tapgate.toml'), POLICY);
      gate = await startTapgate({ cwd: dir, port, args: ['demo', '--config', 'tapgate.toml'] });
      session = await newPageWithAuthenticator(browser);
      const { page } = session;
      await page.goto(gate.invite);
      await page.getByRole('button', { name: 'Create passkey' }).click();
      await page.waitForURL(`${base}/`);
      const r = await page.goto(`${base}/admin/deploy?env=prod`);
      assert.equal(r.status(), 200);
      assert.equal(page.url(), `${base}/admin/deploy?env=prod`);
    }],

    ['after max_auth_age the same URL sends the browser to sign in, saying why', async () => {
      const { page } = session;
      await new Promise((resolve) => setTimeout(resolve, 11_000));
      await page.goto(`${base}/admin/deploy?env=prod`);
      await page.waitForURL((u) => u.pathname === '/.tapgate/login');
      const u = new URL(page.url());
      assert.equal(u.searchParams.get('rd'), '/admin/deploy?env=prod');
      assert.equal(u.searchParams.get('reason'), 'auth-too-old');
      await page.getByText('This page needs a recent key tap').waitFor();
      await screenshot(page, 'login-step-up');
      // A route without max_auth_age still lets the old session through.
      const other = await page.evaluate(async () => (await fetch('/docs', { headers: { accept: 'application/json' } })).status);
      assert.equal(other, 200);
    }],

    ['a new tap returns to the same URL, now allowed', async () => {
      const { page } = session;
      await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
      await page.waitForURL(`${base}/admin/deploy?env=prod`);
      const text = await page.locator('body').innerText();
      assert.match(text, /You are signed in/);
      assert.deepEqual(session.problemsOn('/.tapgate/login'), [], 'no console errors or CSP violations on the login page');
    }],
  ], diagnose);
});
