// Keys for life in a real browser (issue 4): the account page adds a
// backup key (a second authenticator), revokes the first, and the backup
// signs in; the admin page creates an invite with a QR code, lists and
// cancels it. Chromium's virtual authenticators stand in for the keys.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
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

test('a backup key added on the account page signs in after the first is revoked; the admin page invites with a QR code', { timeout: 120_000 }, async (t) => {
  const dir = await tempDir('tapgate-browser-keys-');
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
    try { pageText = (await session.page.locator('body').innerText()).slice(0, 2500); } catch { /* none */ }
    return `page URL: ${session?.page.url()}\npage text: ${pageText}\nproblems: ${JSON.stringify(session?.problems ?? [])}\n${gate ? gate.tail() : ''}`;
  };
  const me = () => session.page.evaluate(async () => (await fetch('/.tapgate/api/account')).json());

  let first;       // the first authenticator's id
  let firstCreds;  // its credentials, to plug it in again later
  let second;      // the backup authenticator's id
  let subject;

  await steps(t, [
    ['register from the invite; the account page nags about a single key', async () => {
      gate = await startTapgate({ cwd: dir, port });
      session = await newPageWithAuthenticator(browser);
      first = session.authenticatorId;
      const { page } = session;
      await page.goto(gate.invite);
      await page.getByLabel('Name for this passkey').fill('Laptop');
      await page.getByRole('button', { name: 'Create passkey' }).click();
      await page.waitForURL(`${base}/`);
      await page.goto(`${base}/.tapgate/account`);
      await page.getByRole('heading', { name: 'You have only one key' }).waitFor();
      const items = page.locator('#credential-list > li');
      assert.equal(await items.count(), 1);
      await items.first().getByText('Laptop').waitFor();
      subject = (await me()).subject;
      await screenshot(page, 'account-one-key');
    }],

    ['"Add a key" registers a backup key on a second authenticator', async () => {
      const { page } = session;
      // Unplug the first key (it would refuse: its credential is excluded)
      // and plug in the backup.
      firstCreds = await session.credentials(first);
      assert.equal(firstCreds.length, 1);
      await session.unplug(first);
      second = await session.plugIn('usb');
      await page.getByLabel('Name for the new key').fill('Blue security key');
      await page.getByRole('button', { name: 'Add a key' }).click();
      await page.locator('#status.status--success').getByText('Blue security key').waitFor();
      const items = page.locator('#credential-list > li');
      await items.nth(1).waitFor();
      assert.equal(await items.count(), 2);
      assert.equal(await page.locator('#backup-banner').isVisible(), false, 'no nagging with two keys');
      assert.equal((await session.credentials(second)).length, 1, 'the backup holds one credential');
      const account = await me();
      assert.equal(account.active_keys, 2);
      await screenshot(page, 'account-two-keys');
    }],

    ['revoking the first key (this session\'s) asks first, then signs out', async () => {
      const { page } = session;
      const laptop = page.locator('#credential-list > li', { hasText: 'Laptop' });
      await laptop.getByRole('button', { name: 'Revoke Laptop' }).click();
      await laptop.getByText('That includes this session').waitFor();
      await screenshot(page, 'account-revoke-confirm');
      await laptop.getByRole('button', { name: 'Revoke', exact: true }).click();
      await page.waitForURL((u) => u.pathname === '/.tapgate/login');
    }],

    ['the backup key signs in as the same person; the first key is listed as revoked', async () => {
      const { page } = session;
      await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
      await page.waitForURL(`${base}/`);
      const account = await me();
      assert.equal(account.subject, subject, 'same identity');
      assert.equal(account.active_keys, 1);
      await page.goto(`${base}/.tapgate/account`);
      await page.locator('#credential-list > li').first().getByText('Blue security key').waitFor();
      assert.equal(await page.locator('#revoked-keys').isVisible(), true);
      await page.getByRole('heading', { name: 'You have only one key' }).waitFor();
    }],

    ['the revoked key, plugged in again, is refused', async () => {
      const { page } = session;
      const backupCreds = await session.credentials(second);
      await page.evaluate(() => fetch('/.tapgate/logout', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' }));
      await session.unplug(second);
      const again = await session.plugIn('internal');
      await session.restore(again, firstCreds);
      await page.goto(`${base}/.tapgate/login?rd=%2F`);
      await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
      await page.locator('#status.status--error').getByText('This key was revoked').waitFor();
      // The backup again, for the admin page.
      await session.unplug(again);
      second = await session.plugIn('usb');
      await session.restore(second, backupCreds);
      await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
      await page.waitForURL(`${base}/`);
    }],

    ['the admin page lists users with their keys and creates an invite shown as a QR code', async () => {
      const { page } = session;
      await page.goto(`${base}/.tapgate/admin`);
      await page.getByRole('heading', { name: 'Administration' }).waitFor();
      const user = page.locator('#user-list > li').first();
      await user.getByText('admin@localhost.localdomain').waitFor();
      await user.getByText('Blue security key').waitFor();
      await user.getByText('Laptop').waitFor();
      await page.getByLabel('Email').fill('bob@example.com');
      await page.getByLabel('Roles (comma separated)').fill('member, deploy');
      await page.getByRole('button', { name: 'Create invite' }).click();
      await page.locator('#invite-result').waitFor({ state: 'visible' });
      const url = await page.locator('#invite-url').innerText();
      assert.match(url, new RegExp(`^${base.replace(/[.]/g, '\\.')}/\\.tapgate/register\\?invite=\\S+$`));
      const qr = page.locator('#invite-qr');
      assert.match(await qr.getAttribute('src'), /^data:image\/svg\+xml;base64,/);
      // The image really decodes (an SVG the CSP allows as img-src data:).
      const width = await qr.evaluate((img) => img.decode().then(() => img.naturalWidth));
      assert.ok(width > 0, 'the QR code image decodes');
      const invite = page.locator('#invite-list > li', { hasText: 'bob@example.com' });
      await invite.getByText('pending').waitFor();
      await screenshot(page, 'admin-invite');
    }],

    ['cancelling the invite makes its link useless', async () => {
      const { page } = session;
      const url = await page.locator('#invite-url').innerText();
      const invite = page.locator('#invite-list > li', { hasText: 'bob@example.com' });
      await invite.getByRole('button', { name: 'Cancel invite' }).click();
      await page.locator('#status.status--success').getByText('cancelled').waitFor();
      // The status is shown first, then the list reloads: wait for it.
      await page.locator('#invite-list > li', { hasText: 'bob@example.com' }).waitFor({ state: 'detached' });
      assert.equal(await page.locator('#invite-list > li', { hasText: 'bob@example.com' }).count(), 0);
      await page.getByLabel('Show used, cancelled and expired').check();
      await page.locator('#invite-list > li', { hasText: 'bob@example.com' }).getByText('cancelled').waitFor();
      const token = new URL(url).searchParams.get('invite');
      // Asked from outside the page (a phone that scanned the code would).
      const r = await fetch(`${base}/.tapgate/api/register/options`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ invite: token }),
      });
      assert.equal(r.status, 400);
      assert.equal((await r.json()).error, 'invite-invalid');
    }],

    ['the account and admin pages logged no console errors or CSP violations', async () => {
      assert.deepEqual(session.problemsOn('/.tapgate/account'), [], 'account page');
      assert.deepEqual(session.problemsOn('/.tapgate/admin'), [], 'admin page');
    }],
  ], diagnose);
});
