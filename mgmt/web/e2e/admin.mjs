// The administration pages end to end in a real browser (Debian's
// chromium through Playwright), with no VM: an administrator creates a
// user on the Users page (the form's own messages for a short and a
// mistyped password first), changes their role and back, and sees the
// roles; the user logs in, is shown why they see no users, changes their
// password (a wrong current one and a mismatch refused in the form's
// words) and logs in with the new one, not the old; they create an API
// token (its secret shown once), see it listed, use it for a request and
// see its use noted, revoke it after confirming, and see it refused; the
// administrator enters and exits this host's maintenance mode on the
// cluster card, and deletes the user after confirming.
//
// Environment: SFERA_URL, SFERA_PASSWORD_FILE (or SFERA_PASSWORD),
// CHROMIUM, SFERA_ARTIFACTS (screenshots: on failure; of each step when
// SFERA_SCREENSHOTS=1), as for console.mjs.
//
// Exits 0 when every step passed, 1 with the reason otherwise.

import { base, fail, log, openBrowser, password, run, until } from './common.mjs';

/** sfera-vswitchd's default switch, which mgmtd makes at its first start. */
const DEFAULT_SWITCH = 'vSwitch0';

/** A request from this script, not the browser: no cookie, only the token given. */
async function withToken(token, path) {
  const r = await fetch(new URL(path, base), { headers: { Authorization: `Bearer ${token}` } });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const session = await openBrowser(900);
const { page, shot } = session;

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

await run(session, async () => {
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

  // The cluster card: this host enters maintenance mode and exits it;
  // it cannot remove itself, and says why.
  await page.getByTestId('tree-host').click();
  const cluster = page.getByTestId('cluster-hosts');
  await cluster.locator('tr[data-host-state=connected]').waitFor();
  const remove = cluster.getByTestId('host-remove');
  if (!(await remove.isDisabled())) fail('this host may remove itself');
  if (!(await remove.getAttribute('title')).includes('through another host')) fail('no reason on the disabled Remove');
  await cluster.getByTestId('host-enter-maintenance').click();
  await cluster.locator('tr[data-host-state=maintenance]').getByText('maintenance mode').waitFor();
  await shot('host-maintenance');
  await cluster.getByTestId('host-exit-maintenance').click();
  await cluster.locator('tr[data-host-state=connected]').waitFor();
  log('this host entered maintenance mode and exited it from the cluster card');

  // A new switch's uplink is picked from the host's interfaces, as the API
  // lists them (physical ones first); the form is left without making one.
  const nics = await page.evaluate(async () => (await fetch('/api/v1/host/nics')).json());
  if (!nics.items.length || nics.items.some((n) => n.name === 'lo')) fail(`the host's interfaces: ${JSON.stringify(nics)}`);
  await page.goto(`${base}/#/switches/${DEFAULT_SWITCH}`);
  await page.getByTestId('switch-new').click();
  await page.getByTestId('uplink-add').and(page.locator(':enabled')).click();
  const offered = await page.getByLabel('Uplink 1 interface').locator('option').allTextContents();
  for (const n of nics.items) {
    if (!offered.some((o) => o.startsWith(`${n.name} (`))) fail(`${n.name} is not offered: ${offered.join(' | ')}`);
  }
  await page.getByLabel('Uplink 1 type').selectOption('tap');
  await page.getByLabel('Uplink 1 TAP name').waitFor();
  await shot('switch-uplinks');
  await page.getByTestId('switch-form').getByRole('button', { name: 'Cancel' }).click();
  log(`a new switch's uplink offers the host's interfaces: ${nics.items.map((n) => n.name).join(', ')}`);

  await page.getByTestId('top-admin').click();
  await userRow(ops.name).getByTestId('user-delete-open').click();
  await page.getByTestId('confirm-dialog').getByText(`Delete user ${ops.name}?`).waitFor();
  await page.getByTestId('confirm').click();
  await userRow(ops.name).waitFor({ state: 'detached' });
  log(`user ${ops.name} deleted after confirming`);

  // The events pane tells the story.
  await page.getByRole('tab', { name: 'Events' }).click();
  for (const kind of ['user.created', 'user.role_changed', 'session.password_changed', 'token.created', 'user.deleted', 'host.maintenance_entered', 'host.maintenance_exited']) {
    await page.getByTestId('events').getByText(kind, { exact: true }).first().waitFor({ timeout: 10_000 });
  }
});
