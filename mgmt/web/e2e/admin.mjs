// The administration pages end to end in a real browser (Debian's
// chromium through Playwright), with no VM: an administrator creates a
// user on the Users page (the form's own messages for a short and a
// mistyped password first), changes their role and back, and sees the
// roles; the user logs in, is shown why they see no users, changes their
// password (a wrong current one and a mismatch refused in the form's
// words) and logs in with the new one, not the old; they create an API
// token (its secret shown once), see it listed, use it for a request and
// see its use noted, revoke it after confirming, and see it refused; the
// administrator deletes the user after confirming.
//
// Environment: SFERA_URL, SFERA_PASSWORD_FILE (or SFERA_PASSWORD),
// CHROMIUM, SFERA_ARTIFACTS (screenshots: on failure; of each step when
// SFERA_SCREENSHOTS=1), as for console.mjs.
//
// Exits 0 when every step passed, 1 with the reason otherwise.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.SFERA_URL ?? 'https://127.0.0.1:8443';
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const artifacts = process.env.SFERA_ARTIFACTS ?? 'test-results';
const everyStep = process.env.SFERA_SCREENSHOTS === '1';
const password =
  process.env.SFERA_PASSWORD ??
  (process.env.SFERA_PASSWORD_FILE ? readFileSync(process.env.SFERA_PASSWORD_FILE, 'utf8').trim() : null);

const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

function fail(msg) {
  throw new Error(msg);
}

if (+process.versions.node.split('.')[0] < 20) fail(`Node.js ${process.version}: playwright-core needs 20 or later`);
if (!password) fail('No password: set SFERA_PASSWORD_FILE or SFERA_PASSWORD');
if (!existsSync(executablePath)) fail(`No browser at ${executablePath} (apt-get install chromium)`);
mkdirSync(artifacts, { recursive: true });

/** Polls `probe` until it returns a truthy value. */
async function until(what, timeoutMs, probe, everyMs = 300) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) fail(`Timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? ` (${last.message})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A request from this script, not the browser: no cookie, only the token given. */
async function withToken(token, path) {
  const r = await fetch(new URL(path, base), { headers: { Authorization: `Bearer ${token}` } });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 900 } });
const page = await context.newPage();
const consoleErrors = [];
page.on('console', (m) => {
  // Refused requests (a wrong password's 403) are logged by the browser
  // itself; only the app's own errors count.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
});
page.on('pageerror', (e) => consoleErrors.push(String(e)));

let step = 0;
async function shot(name, force = false) {
  if (!everyStep && !force) return;
  const file = join(artifacts, `${String(++step).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  log(`screenshot ${file}`);
}

async function login(user, pw) {
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(pw);
  await page.getByRole('button', { name: 'Log in' }).click();
}

async function logout() {
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
}

const userRow = (name) => page.locator(`[data-testid=users] tr[data-user="${name}"]`);

const ops = { name: 'e2e-ops', first: 'first-password-1', second: 'second-password-2' };

try {
  await page.goto(base);
  await login('admin', password);
  await page.getByTestId('user').waitFor();

  // Users: the administrator's own row cannot be changed here, and says why.
  await page.getByTestId('top-admin').click();
  await userRow('admin').waitFor();
  if (!(await userRow('admin').getByTestId('user-delete-open').isDisabled())) fail("the administrator's own Delete is enabled");
  await page.getByTestId('users-own-reason').getByText('an administrator always remains').waitFor();

  // A new user, the form's own messages first.
  await page.getByTestId('user-new').click();
  const create = page.getByTestId('user-create');
  await create.getByLabel('User name').fill(ops.name);
  await create.getByLabel('Password', { exact: true }).fill('short');
  await create.getByLabel('Repeat the password').fill('short');
  await page.getByTestId('user-create-submit').click();
  await create.getByText('The password must have at least 12 characters.').waitFor();
  await create.getByLabel('Password', { exact: true }).fill(ops.first);
  await create.getByLabel('Repeat the password').fill(`${ops.first}x`);
  await page.getByTestId('user-create-submit').click();
  await create.getByText('The two passwords are not the same.').waitFor();
  await create.getByLabel('Repeat the password').fill(ops.first);
  await shot('user-create');
  await page.getByTestId('user-create-submit').click();
  await userRow(ops.name).and(page.locator('[data-role=read-only]')).waitFor();
  log(`user ${ops.name} created (read-only), after the form refused a short and a mistyped password`);

  // Its role, changed and changed back.
  for (const role of ['administrator', 'read-only']) {
    await userRow(ops.name).getByTestId('user-role-open').click();
    await page.getByTestId('user-role').locator('select').selectOption(role);
    await page.getByTestId('user-role-submit').click();
    await userRow(ops.name).and(page.locator(`[data-role="${role}"]`)).waitFor();
  }
  log(`${ops.name}'s role changed to administrator and back`);
  await shot('users', true);

  // The roles, as the routes allow them.
  await page.getByTestId('tree-roles').click();
  await page.getByTestId('role-read-only').getByText('Virtual machines and their consoles').waitFor();
  const vmsRow = page.getByTestId('role-read-only').locator('tr', { hasText: 'Virtual machines' });
  if ((await vmsRow.innerText()).replace(/\s+/g, ' ').trim() !== 'Virtual machines and their consoles Partly No') fail(`read-only on VMs: ${await vmsRow.innerText()}`);
  await logout();

  // The user logs in, sees why there are no users for them, and changes
  // their password.
  await login(ops.name, ops.first);
  await page.getByTestId('user').getByText(ops.name).waitFor();
  await page.getByTestId('tree-users').click();
  await page.getByTestId('users-denied').getByText('Only administrators see and manage users').waitFor();
  await page.getByTestId('top-password').click();
  const form = page.getByRole('form', { name: 'Change password' });
  await form.getByLabel('Current password').fill('not-my-password');
  await form.getByLabel('New password', { exact: true }).fill(ops.second);
  await form.getByLabel('Repeat the new password').fill(ops.second);
  await page.getByTestId('password-submit').click();
  await form.getByText('The current password is wrong.').waitFor();
  await form.getByLabel('Current password').fill(ops.first);
  await form.getByLabel('Repeat the new password').fill(`${ops.second}!`);
  await page.getByTestId('password-submit').click();
  await form.getByText('The two passwords are not the same.').waitFor();
  await form.getByLabel('Repeat the new password').fill(ops.second);
  await page.getByTestId('password-submit').click();
  await page.getByTestId('password-changed').waitFor();
  await logout();
  await login(ops.name, ops.first);
  await page.getByText('Invalid user name or password').waitFor();
  await login(ops.name, ops.second);
  await page.getByTestId('user').getByText(ops.name).waitFor();
  log(`${ops.name} changed their password: the old one is refused, the new one logs in`);

  // A token: made, shown once, listed, used, revoked, refused.
  await page.getByTestId('tree-tokens').click();
  await page.getByTestId('token-create').click();
  await page.getByTestId('token-problem').getByText('Give the token a name').waitFor();
  await page.getByLabel('Name', { exact: true }).fill('e2e-script');
  await page.getByTestId('token-create').click();
  await page.getByTestId('token-made').getByText('it will not be shown again').waitFor();
  const secret = await page.getByTestId('token-secret').inputValue();
  const row = page.locator('[data-testid=tokens] tr[data-token=e2e-script]');
  await row.waitFor();
  if (!(await row.innerText()).includes(ops.name)) fail(`the token's row: ${await row.innerText()}`);
  await shot('token-made');
  const who = await withToken(secret, '/api/v1/session');
  if (who.status !== 200 || who.body?.user !== ops.name || who.body?.role !== 'read-only') fail(`the token's request: ${JSON.stringify(who)}`);
  const denied = await withToken(secret, '/api/v1/users');
  if (denied.status !== 403) fail(`a read-only token listed users: ${denied.status}`);
  await page.getByTestId('tree-password').click();
  await page.getByTestId('tree-tokens').click();
  await until("the token's use to be listed", 10_000, async () => !(await row.innerText()).includes('never'));
  log('token made, shown once, listed, used (its use listed), refused what its read-only user may not do');
  await row.getByTestId('token-revoke-open').click();
  await page.getByTestId('confirm-dialog').getByText('Revoke token e2e-script?').waitFor();
  await page.getByTestId('confirm').click();
  await row.waitFor({ state: 'detached' });
  const revoked = await withToken(secret, '/api/v1/session');
  if (revoked.status !== 401) fail(`the revoked token: ${JSON.stringify(revoked)}`);
  log('token revoked after confirming, and refused (401)');
  await logout();

  // The administrator deletes the user, after confirming.
  await login('admin', password);
  await page.getByTestId('top-admin').click();
  await userRow(ops.name).getByTestId('user-delete-open').click();
  await page.getByTestId('confirm-dialog').getByText(`Delete user ${ops.name}?`).waitFor();
  await page.getByTestId('confirm').click();
  await userRow(ops.name).waitFor({ state: 'detached' });
  log(`user ${ops.name} deleted after confirming`);

  // The events pane tells the story.
  await page.getByRole('tab', { name: 'Events' }).click();
  for (const kind of ['user.created', 'user.role_changed', 'session.password_changed', 'token.created', 'user.deleted']) {
    await page.getByTestId('events').getByText(kind, { exact: true }).first().waitFor({ timeout: 10_000 });
  }
  if (consoleErrors.length) fail(`the page logged errors: ${consoleErrors.join(' | ')}`);
  log('PASS');
  await browser.close();
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  try {
    await shot('failure', true);
    console.error(`page text:\n${(await page.locator('body').innerText()).slice(0, 3000)}`);
  } catch {
    // The page is gone too.
  }
  if (consoleErrors.length) console.error(`browser console errors: ${consoleErrors.join(' | ')}`);
  await browser.close();
  process.exit(1);
}
