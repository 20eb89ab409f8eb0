// Takes the README's screenshots of a running Sfera (`make run`): a VM
// made in the wizard from the Tiny Linux template, its serial console in
// the browser, and its charts. The VM is deleted afterwards.
//
//   SFERA_URL=https://127.0.0.1:8443 SFERA_PASSWORD_FILE=.sfera/admin-password \
//     node mgmt/web/e2e/screenshot.mjs docs
//
// Writes <dir>/console.png, <dir>/performance.png and <dir>/users.png.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.SFERA_URL ?? 'https://127.0.0.1:8443';
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const password = process.env.SFERA_PASSWORD ?? readFileSync(process.env.SFERA_PASSWORD_FILE ?? '.sfera/admin-password', 'utf8').trim();
const out = process.argv[2] ?? 'docs';
const name = process.env.SFERA_VM ?? 'web1';
if (!existsSync(executablePath)) throw new Error(`No browser at ${executablePath}`);
mkdirSync(out, { recursive: true });

async function until(what, timeoutMs, probe) {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
try {
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 860 } })).newPage();
  const vm = () => page.evaluate(async (n) => (await fetch(`/api/v1/vms/${n}`)).json(), name);
  const term = () => page.locator('[data-testid=console] .xterm-rows').innerText();

  await page.goto(base);
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('tree-new-vm').click();
  await page.getByTestId('wizard-name').fill(name);
  for (let i = 0; i < 4; i++) await page.getByTestId('wizard-next').click();
  await page.getByTestId('wizard-finish').click();
  await until('the VM to run', 120_000, async () => (await vm()).state === 'running');

  await page.getByTestId('tab-console').click();
  await until('the guest to be ready', 240_000, async () => (await term()).includes('SFERA-GUEST-READY'));
  await page.getByTestId('console').click();
  await page.keyboard.type('cat /proc/partitions; ip link show eth0; free -m');
  await page.keyboard.press('Enter');
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(out, 'console.png') });

  // Some disk writes and frames out of the NIC, then a few samples.
  await page.keyboard.type(
    'ip link set eth0 up; ip addr add 10.77.0.1/24 dev eth0; (ping -c 400 -i 0.2 10.77.0.2 >/dev/null 2>&1 &); ' +
      'for i in $(seq 60); do dd if=/dev/urandom of=/dev/vda bs=64k count=16 conv=fsync 2>/dev/null; sleep 1; done &',
  );
  await page.keyboard.press('Enter');
  await page.getByTestId('tab-performance').click();
  await until('a few samples', 180_000, async () => Number(await page.getByTestId('chart-disk').getAttribute('data-points')) >= 5);
  await page.screenshot({ path: join(out, 'performance.png') });

  // The administration's Users page, with a read-only user besides admin.
  await page.evaluate(() =>
    fetch('/api/v1/users', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'operator', password: 'operator-password', role: 'read-only' }) }),
  );
  await page.getByTestId('top-admin').click();
  await page.locator('[data-testid=users] tr[data-user=operator]').waitFor();
  await page.screenshot({ path: join(out, 'users.png') });
  await page.evaluate(() => fetch('/api/v1/users/operator', { method: 'DELETE' }));

  await page.getByTestId(`tree-vm-${name}`).click();
  await page.getByTestId('tab-summary').click();
  await page.getByTestId('power-off').click();
  await until('the VM to stop', 60_000, async () => (await vm()).state === 'stopped');
  await page.getByTestId('delete').click();
  await page.getByTestId('confirm-delete').click();
  await until('the VM to be deleted', 60_000, async () => (await vm()).error?.code === 'not_found');
  console.log(`screenshots in ${out}`);
} finally {
  await browser.close();
}
