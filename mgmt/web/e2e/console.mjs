// End to end in a real browser: Debian's chromium, driven by Playwright,
// logs in to a running sfera-mgmtd, creates a Tiny Linux VM with a disk and
// a NIC in the wizard, edits it (memory, a second NIC) in the edit
// wizard, powers it on, sees SFERA-GUEST-READY in the serial
// console, makes disk and network traffic from that console and sees the
// charts move; sees the VM's screen in the graphical console and types into
// it; is refused the screen as a read-only user; powers the VM off and on
// and types a command into the fresh serial console; does it again from
// the console tab and sees the terminal start at the new power-on; powers
// it off (after a confirmation it first cancels) and on; shuts its guest
// down through the ACPI power button (QEMU; under sfera-vmm the button
// says why it is disabled) and deletes it. The power icons are drawn, and
// disabled actions say why.
//
// Environment:
//   SFERA_URL            mgmtd's base URL (http://127.0.0.1:PORT)
//   SFERA_PASSWORD_FILE  the admin password file (or SFERA_PASSWORD)
//   SFERA_VM             the VM's name (default e2e-tiny)
//   CHROMIUM             the browser (default /usr/bin/chromium)
//   SFERA_ARTIFACTS      a directory for screenshots (on failure, and of
//                        each step when SFERA_SCREENSHOTS=1)
//
// Exits 0 when every step passed, 1 with the reason otherwise. Nothing is
// skipped: a missing browser is a failure.

import { randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { base, fail, log, openBrowser, password, run, until } from './common.mjs';

const vmName = process.env.SFERA_VM ?? 'e2e-tiny';
// A disk image file on mgmtd's host to import through the datastore page
// (the Rust test makes it with qemu-img); the import step is skipped only
// when run by hand without one.
const importImage = process.env.SFERA_IMPORT_IMAGE ?? null;

/** Clicks a power action that asks first (power off, reset), then its confirmation. */
async function confirmed(testid) {
  await page.getByTestId(testid).click();
  await page.getByTestId('confirm-action').click();
}

const session = await openBrowser(960);
const { page, shot } = session;

/** The VM as the API has it (through the page, with its cookie). */
const apiVm = (name = vmName) =>
  page.evaluate(async (n) => {
    const r = await fetch(`/api/v1/vms/${n}`);
    return r.status === 404 ? null : r.json();
  }, name);

/** The text of the terminal's buffer as xterm.js renders it. */
const terminalText = () => page.locator('[data-testid=console] .xterm-rows').innerText();

/** The top of the terminal's buffer, scrollback included: the viewport
 * scrolled to its first row, read, and scrolled back to the bottom. */
const terminalTop = () =>
  page.evaluate(async () => {
    const viewport = document.querySelector('[data-testid=console] .xterm-viewport');
    const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    viewport.scrollTop = 0;
    viewport.dispatchEvent(new Event('scroll'));
    await frames();
    const text = document.querySelector('[data-testid=console] .xterm-rows').innerText;
    viewport.scrollTop = viewport.scrollHeight;
    viewport.dispatchEvent(new Event('scroll'));
    await frames();
    return text;
  });

/** What the VM's screen shows: the number of distinct colours (up to 64)
 * on the viewer's canvas; a blank or unconnected one has at most one. */
const screen = () =>
  page.evaluate(() => {
    const c = document.querySelector('[data-testid=display] canvas');
    if (!c || !c.width || !c.height) return { colours: 0 };
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    for (let i = 0; i < px.length && colours.size < 64; i += 4) colours.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
    return { colours: colours.size };
  });

/** The HTTP status of a WebSocket upgrade of `path` with `cookie`: 101
 * when it opens (then closed at once), the refusal otherwise. */
function upgradeStatus(path, cookie) {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      rejectUnauthorized: false,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        Origin: url.origin,
        Cookie: cookie,
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
}

async function chartMax(testid) {
  const v = await page.locator(`[data-testid=${testid}]`).getAttribute('data-max');
  return Number(v ?? 0);
}

await run(session, async () => {
  // Log in.
  log(`opening ${base}`);
  await page.goto(base);
  await page.getByLabel('User name').fill('admin');
  await page.getByLabel('Password').fill(password);
  await shot('login');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user').waitFor();
  await page.getByTestId('tree-host').waitFor();
  log('logged in');
  await until('the default datastore and port group in the tree', 60_000, async () => {
    const tree = await page.locator('nav.tree').innerText();
    return tree.includes('local') && tree.includes('vm-network');
  });
  await shot('host');
  // The cluster card: this host, connected (a cluster of one here).
  await page.locator('[data-testid=cluster-hosts] tr[data-host-state=connected]').first().waitFor();
  log('the cluster card lists this host connected');
  // "Add host": a join token, which needs HTTPS (the joining host pins
  // this host's certificate); over plain HTTP the form says why not.
  await page.getByTestId('cluster-add-host').click();
  await page.getByLabel('Join token lifetime').selectOption('600');
  await page.getByTestId('join-token-make').click();
  if (base.startsWith('https:')) {
    const token = await page.getByTestId('join-token').innerText();
    if (!/^[0-9a-f]{64}\.[0-9a-f]{64}$/.test(token)) throw new Error(`join token: ${token}`);
    log('Add host: a join token is made and shown with the command to run');
  } else {
    await page.getByTestId('join-token-error').getByText('join tokens need HTTPS').waitFor();
    log('Add host: over plain HTTP the join token is refused and the form says why');
  }

  // The wizard: Tiny Linux with a 1 GiB disk on local and a NIC on
  // vm-network, not powered on yet (the power button does that).
  await page.getByTestId('tree-new-vm').click();
  await page.getByTestId('wizard-name').fill(vmName);
  await page.getByTestId('wizard-next').click();
  await page.getByTestId('wizard-vcpus').waitFor();
  await page.getByTestId('wizard-next').click();
  await page.getByTestId('wizard-disk-0').waitFor();
  await page.getByLabel('Disk 0 datastore').selectOption('local');
  await page.getByLabel('Disk 0 size in GiB').fill('1');
  await page.getByTestId('wizard-next').click();
  await page.getByTestId('wizard-nic-0').waitFor();
  await page.getByLabel('NIC 0 port group').selectOption('vm-network');
  await page.getByTestId('wizard-next').click();
  await page.getByTestId('wizard-power-on').uncheck();
  await shot('wizard-review');
  await page.getByTestId('wizard-finish').click();
  await page.waitForURL(`**/#/vms/${vmName}`, { timeout: 120_000 });
  await until('the VM to be stopped with one disk and one NIC', 60_000, async () => {
    const vm = await apiVm();
    return vm?.state === 'stopped' && vm.disks.length === 1 && vm.nics.length === 1;
  });
  await page.getByTestId('vm-disks').getByText(`${vmName}/disk0`).waitFor();
  await page.getByTestId('vm-nics').getByText('vm-network').waitFor();
  {
    const host = (await apiVm())?.host;
    const shown = (await page.getByTestId('vm-host').innerText()).trim();
    if (!host || shown !== host) throw new Error(`the VM's host: the page shows ${shown}, the API says ${host}`);
  }
  await page.locator(`[data-testid=tasks] tr[data-task-kind="vm.create"][data-task-state=success]`).first().waitFor();
  log('created');

  // Edit in the wizard: more memory (a value too small is refused on the
  // spot) and a second NIC; the VM's page shows them once the task is done.
  await page.getByTestId('edit').click();
  await page.getByTestId('edit-wizard').waitFor();
  await page.getByTestId('edit-next').click();
  await page.getByTestId('edit-memory').fill('64');
  await page.getByTestId('edit-next').click();
  await page.getByTestId('edit-wizard').getByText('Memory must be at least 128 MiB').waitFor();
  await page.getByTestId('edit-memory').fill('640');
  await page.getByTestId('edit-next').click();
  await page.getByTestId('edit-disk-0').waitFor();
  await page.getByTestId('edit-next').click();
  await page.getByTestId('edit-nic-0').waitFor();
  await page.getByTestId('edit-add-nic').click();
  await page.getByLabel('New NIC 0 port group').selectOption('vm-network');
  await page.getByLabel('New NIC 0 MAC').fill('52:54:00:0e:d1:70');
  await page.getByTestId('edit-next').click();
  await shot('edit-review');
  await page.getByTestId('edit-finish').click();
  await until('the edit to reach the VM', 60_000, async () => {
    const vm = await apiVm();
    return vm?.memory_mib === 640 && vm.nics.length === 2 && vm.nics[1].mac === '52:54:00:0e:d1:70';
  });
  await page.getByTestId('edit-wizard').waitFor({ state: 'detached', timeout: 30_000 });
  await page.getByTestId('vm-nics').getByText('52:54:00:0e:d1:70').waitFor();
  await page.locator(`[data-testid=tasks] tr[data-task-kind="vm.edit"][data-task-state=success]`).first().waitFor();
  log('edited in the wizard: 640 MiB and a second NIC');

  // The host page shows the VM's hypervisor driver and why.
  await page.getByTestId('tree-host').click();
  const hostDriver = await page.getByTestId('host-driver').innerText();
  await page.getByTestId('vm-drivers').getByText(vmName).waitFor();
  const driverRow = await page.getByTestId('vm-drivers').locator('tr', { hasText: vmName }).innerText();
  if (!driverRow.includes(hostDriver)) fail(`the host page shows ${driverRow} (default driver ${hostDriver})`);
  log(`host page: ${vmName} runs under ${hostDriver}`);
  await page.getByTestId(`tree-vm-${vmName}`).click();
  await page.getByTestId('vm-driver').waitFor();

  // Power on: the button turns into a task with its progress.
  await page.getByTestId('power-on').click();
  await until('the VM to run', 120_000, async () => (await apiVm())?.state === 'running');
  await page.locator(`[data-testid=tasks] tr[data-task-kind="vm.power_on"][data-task-state=success]`).first().waitFor({ timeout: 30_000 });
  await page.getByTestId('power-off').and(page.locator(':enabled')).waitFor({ timeout: 30_000 });
  log('powered on');

  // Pause and resume with the buttons, whose icons are drawn (SVG, not
  // glyphs the browser's fonts may not have: they showed as empty boxes).
  for (const testid of ['pause', 'power-on', 'power-off', 'shutdown', 'reboot', 'reset']) {
    const box = await page.getByTestId(testid).locator('svg.power-icon').boundingBox();
    if (!box || box.width < 10 || box.height < 10) fail(`the ${testid} button has no icon: ${JSON.stringify(box)}`);
  }
  // A disabled action says why.
  const deleteWhy = await page.getByTestId('delete').getAttribute('title');
  if (!(await page.getByTestId('delete').isDisabled()) || !deleteWhy?.includes('power it off')) fail(`the disabled Delete says: ${deleteWhy}`);
  const onWhy = await page.getByTestId('power-on').getAttribute('title');
  if (!onWhy?.includes('running already')) fail(`the disabled Power on says: ${onWhy}`);
  log(`disabled actions say why ("${deleteWhy}")`);
  await page.getByTestId('pause').and(page.locator(':enabled')).click();
  await until('the VM to be paused', 60_000, async () => (await apiVm())?.state === 'paused');
  await page.getByTestId('resume').and(page.locator(':enabled')).waitFor({ timeout: 30_000 });
  await shot('paused');
  await page.getByTestId('resume').click();
  await until('the VM to run again', 60_000, async () => (await apiVm())?.state === 'running');
  await page.getByTestId('pause').and(page.locator(':enabled')).waitFor({ timeout: 30_000 });
  log('paused and resumed');

  // The serial console in the browser shows the guest's readiness line.
  await page.getByTestId('tab-console').click();
  await until('the console to connect', 30_000, async () => (await page.getByTestId('console-status').innerText()) === 'connected');
  await until('SFERA-GUEST-READY in the browser console', 240_000, async () => (await terminalText()).includes('SFERA-GUEST-READY'), 1000);
  log('guest ready (seen in the browser console)');
  await shot('console-ready');

  // Traffic from the guest's shell, typed into the browser terminal:
  // ARP requests and pings out of the NIC, and writes to the disk.
  await page.getByTestId('console').click();
  await page.keyboard.type(
    'ip link set eth0 up; ip addr add 10.77.0.1/24 dev eth0; ' +
      '(ping -c 120 -i 0.25 -s 1000 10.77.0.2 >/dev/null 2>&1 &); ' +
      'for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/dev/vda bs=64k count=64 conv=fsync 2>/dev/null; sleep 1; done; echo TRAFFIC-$((40+2))-DONE',
  );
  await page.keyboard.press('Enter');
  await until('the traffic commands to finish', 180_000, async () => (await terminalText()).includes('TRAFFIC-42-DONE'), 1000);
  log('traffic made from the browser console');
  await shot('console-traffic');

  // The charts move.
  await page.getByTestId('tab-performance').click();
  await page.getByTestId('chart-disk').waitFor();
  await until('the disk chart to show writes', 90_000, async () => (await chartMax('chart-disk')) > 0, 1000);
  await until('the network chart to show traffic', 90_000, async () => (await chartMax('chart-network')) > 0, 1000);
  log(`charts: disk max ${(await chartMax('chart-disk')).toFixed(0)} B/s, network max ${(await chartMax('chart-network')).toFixed(0)} B/s`);
  await shot('performance');

  // The graphical console: a shell on the guest's VGA console (tty1),
  // started from the serial one, shows its prompt on the screen; what is
  // typed into the screen reaches it (a directory appears, which the
  // serial console then sees).
  await page.getByTestId('tab-console').click();
  await until('the console to connect', 30_000, async () => (await page.getByTestId('console-status').innerText()) === 'connected');
  await page.getByTestId('console').click();
  await page.keyboard.type('(setsid sh </dev/tty1 >/dev/tty1 2>&1 &); echo TTY1-$((40+2))');
  await page.keyboard.press('Enter');
  // The next prompt first: busybox's shell asks the terminal where its
  // cursor is after each prompt (ESC[6n), and an answer that reached the
  // guest after the `read` below started would be read as part of its line.
  await until('the prompt after starting the tty1 shell', 30_000, async () => /TTY1-42\s*\n\s*guest# /.test(await terminalText()), 200);
  await new Promise((r) => setTimeout(r, 300));
  // A command reading a line waits while the console is reopened below:
  // what the reopened terminal says while it replays the history (its
  // answers to the old prompts' cursor-position queries) must not reach it.
  // (Its length is printed: escape sequences would not show on the screen.)
  await page.keyboard.type('read line; echo "READ[${#line}]"');
  await page.keyboard.press('Enter');
  await page.getByTestId('console-graphical').click();
  await until('the screen to connect', 30_000, async () => (await page.getByTestId('display-status').innerText()) === 'connected');
  const shown = await until('the screen to show something', 60_000, async () => {
    const s = await screen();
    return s.colours > 1 && s;
  });
  await shot('graphical', true);
  // Unshifted keys only: the keyboard is a PS/2 one, and Playwright's
  // typing does not hold Shift for capitals and symbols.
  await page.getByTestId('display').locator('canvas').click();
  await page.keyboard.type('mkdir /tmp/typed-on-the-screen');
  await page.keyboard.press('Enter');
  await shot('graphical-typed', true);
  await page.getByTestId('console-serial').click();
  await until('the console to connect again', 30_000, async () => (await page.getByTestId('console-status').innerText()) === 'connected');
  await page.getByTestId('console').click();
  await page.keyboard.type('clean');
  await page.keyboard.press('Enter');
  // The command line itself shows READ[${#line}]; the output is the other one.
  const readOut = async () => [...(await terminalText()).matchAll(/READ\[(.*?)\]/g)].map((m) => m[1]).find((v) => v !== '${#line}');
  const read = await until('the line typed after reopening the console', 30_000, async () => (await readOut()) ?? false, 500);
  if (read !== String('clean'.length)) fail(`reopening the serial console typed into the guest: it read ${read} characters for "clean"`);
  await page.keyboard.type('for i in 1 2 3 4 5 6 7 8 9 10; do [ -d /tmp/typed-on-the-screen ] && echo SCREEN-KEYS-$((40+2)) && break; sleep 1; done');
  await page.keyboard.press('Enter');
  await until('the keys typed on the screen to reach the guest', 60_000, async () => (await terminalText()).includes('SCREEN-KEYS-42'), 1000);
  log(`graphical console: ${shown.colours}+ colours on the screen, keys typed into it reached the guest; the serial console reopened without typing into it`);

  // A read-only user may open neither console: each can type into the VM.
  const viewer = { name: 'e2e-viewer', password: 'viewer-password-1' };
  const made = await page.evaluate(async (v) => {
    const r = await fetch('/api/v1/users', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...v, role: 'read-only' }) });
    return r.status;
  }, viewer);
  if (made !== 201) fail(`creating the read-only user: ${made}`);
  const login = await fetch(new URL('/api/v1/session', base), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Origin: new URL(base).origin },
    body: JSON.stringify({ username: viewer.name, password: viewer.password }),
  });
  const viewerCookie = (login.headers.get('set-cookie') ?? '').split(';')[0];
  if (login.status !== 200 || !viewerCookie) fail(`the read-only user's login: ${login.status}`);
  const adminCookie = (await page.context().cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
  const vmId = (await apiVm()).id;
  const statuses = {
    adminDisplay: await upgradeStatus(`/api/v1/vms/${vmId}/display`, adminCookie),
    viewerDisplay: await upgradeStatus(`/api/v1/vms/${vmId}/display`, viewerCookie),
    viewerConsole: await upgradeStatus(`/api/v1/vms/${vmId}/console`, viewerCookie),
  };
  if (statuses.adminDisplay !== 101 || statuses.viewerDisplay !== 403 || statuses.viewerConsole !== 403) fail(`console upgrades: ${JSON.stringify(statuses)}`);
  log(`consoles: the administrator's screen opens (101), the read-only user's screen and serial console are refused (403)`);

  // Power off and on: the serial console starts clean (the last power-on's
  // log is a download), and the first command typed into it works (the
  // last session's prompts are not answered into the new boot).
  // Power off asks first, saying what is lost; Cancel changes nothing.
  await page.getByTestId('tab-summary').click();
  await page.getByTestId('power-off').click();
  const lost = await page.getByTestId('confirm-lost').innerText();
  if (!lost.includes('lost') || !lost.includes('Shut down guest')) fail(`the power-off confirmation says: ${lost}`);
  await shot('confirm-power-off');
  await page.getByTestId('confirm-cancel').click();
  await page.getByTestId('confirm-dialog').waitFor({ state: 'detached', timeout: 10_000 });
  if ((await apiVm())?.state !== 'running') fail('a cancelled power-off stopped the VM');
  await page.getByTestId('reset').click();
  if (!(await page.getByTestId('confirm-lost').innerText()).includes('lost')) fail('the reset confirmation does not say what is lost');
  await page.getByTestId('confirm-cancel').click();
  log('power off and reset ask first, saying what is lost; cancelled, the VM runs on');
  await confirmed('power-off');
  await until('the VM to stop', 60_000, async () => (await apiVm())?.state === 'stopped');
  await page.getByTestId('power-on').and(page.locator(':enabled')).click();
  await until('the VM to run again', 120_000, async () => (await apiVm())?.state === 'running');
  await page.getByTestId('tab-console').click();
  await until('the console to connect after the power cycle', 30_000, async () => (await page.getByTestId('console-status').innerText()) === 'connected');
  await until('SFERA-GUEST-READY after the power cycle', 240_000, async () => (await terminalText()).includes('SFERA-GUEST-READY'), 1000);
  if ((await terminalText()).includes('TRAFFIC-42-DONE')) fail('the serial console replays the last power-on');
  await page.getByTestId('console').click();
  await page.keyboard.type('echo CYCLE-$((40+2))-OK');
  await page.keyboard.press('Enter');
  await until('the first command after the power cycle to run', 60_000, async () => (await terminalText()).includes('CYCLE-42-OK'), 1000);
  const previous = await page.evaluate(async (id) => {
    const r = await fetch(`/api/v1/vms/${id}/console-logs/previous`);
    return { status: r.status, text: await r.text() };
  }, vmId);
  if (previous.status !== 200 || !previous.text.includes('TRAFFIC-42-DONE')) fail(`the previous console log: ${previous.status} ${previous.text.slice(-300)}`);
  log('power cycled: a clean serial console that takes commands, the last log downloadable');
  await shot('console-power-cycled');

  // Power off and on again from the console tab, as a user does: the
  // terminal starts clean at the new power-on (its first line says so,
  // nothing of the last boot above it), and the first command typed at the
  // new boot's prompt runs as typed (no answer to one of the last boot's
  // cursor-position queries typed before it: "/bin/sh: 8Rfree: not found").
  await confirmed('power-off');
  await until('the VM to stop', 60_000, async () => (await apiVm())?.state === 'stopped');
  await page.getByTestId('power-on').and(page.locator(':enabled')).click();
  await until('the VM to run again', 120_000, async () => (await apiVm())?.state === 'running');
  await until('the console to connect after powering on from it', 30_000, async () => (await page.getByTestId('console-status').innerText()) === 'connected');
  await until('the prompt of the new boot', 240_000, async () => /SFERA-GUEST-READY[\s\S]*guest# /.test(await terminalText()), 1000);
  await page.getByTestId('console').click();
  await page.keyboard.type('echo ok-$((6*7))');
  await page.keyboard.press('Enter');
  await until('ok-42 from the first command of the new boot', 60_000, async () => (await terminalText()).includes('ok-42'), 1000);
  const newBoot = await terminalText();
  if (newBoot.includes('not found')) fail(`the first command of the new boot was mistyped:\n${newBoot.slice(-600)}`);
  const top = await terminalTop();
  if (!top.trimStart().startsWith('— VM powered on at')) fail(`the console does not start at the new power-on:\n${top.slice(0, 600)}`);
  if (top.includes('CYCLE-42-OK') || newBoot.includes('CYCLE-42-OK')) fail(`the console shows the last boot:\n${top.slice(0, 600)}`);
  log('powered off and on from the console tab: the terminal starts at the new power-on, and its first command runs');
  await shot('console-powered-on-again');

  // Shut the guest down (its ACPI power button) where its driver has one,
  // and see the guest's own shutdown messages in its console log; else
  // the button says why it cannot, and the VM is powered off. Then delete
  // it with its disk, the dialog saying what is lost.
  await page.getByTestId('tab-summary').click();
  const driver = (await apiVm()).driver;
  if (driver === 'qemu') {
    await page.getByTestId('shutdown').and(page.locator(':enabled')).click();
    await until('the guest to shut down', 150_000, async () => (await apiVm())?.state === 'stopped');
    await page.locator(`[data-testid=tasks] tr[data-task-kind="vm.shutdown"][data-task-state=success]`).first().waitFor({ timeout: 30_000 });
    const last = await page.evaluate(async (id) => (await fetch(`/api/v1/vms/${id}/console-logs/current`)).text(), vmId);
    if (!last.includes('sfera-guest: power button pressed: shutting down') || !last.includes('reboot: Power down')) fail(`no shutdown messages from the guest:\n${last.slice(-600)}`);
    log('shut down by its guest (ACPI power button), its shutdown messages in the console log');
  } else {
    const why = await page.getByTestId('shutdown').getAttribute('title');
    if (!(await page.getByTestId('shutdown').isDisabled()) || !why?.includes('no ACPI power button')) fail(`Shut down guest under ${driver}: ${why}`);
    log(`Shut down guest is disabled under ${driver}: "${why}"`);
    await confirmed('power-off');
    await until('the VM to stop', 60_000, async () => (await apiVm())?.state === 'stopped');
  }
  await page.getByTestId('delete').and(page.locator(':enabled')).waitFor({ timeout: 30_000 });
  log('stopped');
  await page.getByTestId('delete').click();
  await page.getByTestId('delete-disks').check();
  if (!(await page.getByTestId('delete-lost').innerText()).includes('lost')) fail('the delete dialog does not say the disks are lost');
  await page.getByTestId('confirm-delete').click();
  await until('the VM to be gone', 60_000, async () => (await apiVm()) === null);
  await until('the VM to leave the tree', 30_000, async () => (await page.getByTestId(`tree-vm-${vmName}`).count()) === 0);
  const volumes = await page.evaluate(async () => (await fetch('/api/v1/datastores/local/volumes')).json());
  if (volumes.items.some((v) => v.name.startsWith(`${vmName}/`))) fail(`the VM's volume is still there: ${JSON.stringify(volumes.items)}`);
  log('deleted with its disk');

  // A port group's policy from its page: a VLAN ID out of range is refused
  // in the form, then an access VLAN and promiscuous mode are saved.
  await page.goto(`${base}/#/port-groups/vm-network`);
  await page.getByTestId('pg-edit').click();
  await page.getByTestId('pg-vlan-mode').selectOption('access');
  await page.getByTestId('pg-vlan-id').fill('5000');
  await page.getByTestId('pg-save').click();
  await page.getByTestId('pg-form').getByText('1 to 4094').waitFor();
  await page.getByTestId('pg-vlan-id').fill('12');
  await page.getByTestId('pg-promiscuous').check();
  await page.getByTestId('pg-save').click();
  await until('the port group to carry VLAN 12', 30_000, async () => {
    const groups = await page.evaluate(async () => (await fetch('/api/v1/port-groups')).json());
    const g = groups.items.find((x) => x.name === 'vm-network');
    return g?.vlan?.mode === 'access' && g.vlan.id === 12 && g.security?.promiscuous === true;
  });
  await page.getByTestId('pg-form').waitFor({ state: 'detached', timeout: 30_000 });
  log('port group policy changed from its page');

  // A trunk given as ranges (as the switch daemon's CLI takes them): a
  // reversed range is refused in the form's words, then 10-12,30 is saved
  // and shown back as ranges.
  await page.getByTestId('pg-edit').click();
  await page.getByTestId('pg-vlan-mode').selectOption('trunk');
  await page.getByTestId('pg-vlan-allowed').fill('20-10');
  await page.getByTestId('pg-save').click();
  await page.getByTestId('pg-form').getByText('from the lower ID to the higher').waitFor();
  await page.getByTestId('pg-vlan-allowed').fill('10-12, 30');
  await page.getByTestId('pg-save').click();
  await until('the port group to trunk VLANs 10-12 and 30', 30_000, async () => {
    const groups = await page.evaluate(async () => (await fetch('/api/v1/port-groups')).json());
    const g = groups.items.find((x) => x.name === 'vm-network');
    return g?.vlan?.mode === 'trunk' && JSON.stringify(g.vlan.allowed) === '[10,11,12,30]';
  });
  await page.getByTestId('pg-form').waitFor({ state: 'detached', timeout: 30_000 });
  await page.getByText('trunk 10-12,30').first().waitFor();
  log('trunk VLANs given as ranges');

  // A volume from the datastore page: created, then deleted.
  await page.goto(`${base}/#/datastores/local`);
  await page.getByTestId('volume-new').click();
  await page.getByTestId('volume-name').fill('web/blank');
  // Larger than the datastore's free space: warned, and made only once
  // the user ticks that they mean it (not made here).
  await page.getByLabel('Size in GiB', { exact: true }).fill('1000000');
  await page.getByTestId('volume-overcommit').getByText("more than the datastore's free space").waitFor();
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.getByText('Tick "Larger than the free space" to make it anyway').waitFor();
  await page.getByLabel('Size in GiB', { exact: true }).fill('0.0625');
  if (await page.getByTestId('volume-overcommit').count()) fail('a 64 MiB volume is warned about as larger than the free space');
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.getByTestId('volumes').getByText('web/blank').waitFor({ timeout: 30_000 });
  page.once('dialog', (d) => d.accept());
  await page.getByTestId('volume-delete-web/blank').click();
  await until('the volume to be deleted', 30_000, async () => {
    const v = await page.evaluate(async () => (await fetch('/api/v1/datastores/local/volumes')).json());
    return !v.items.some((x) => x.name === 'web/blank');
  });
  log('volume created and deleted from the datastore page (one beyond the free space warned about and not made)');

  // Import a disk image from the datastore page, with its progress.
  if (importImage) {
    await page.goto(`${base}/#/datastores/local`);
    await page.getByTestId('import-open').click();
    await page.getByTestId('import-volume').fill('imported/web-disk');
    await page.getByTestId('import-source').fill(importImage);
    await page.getByTestId('import-format').selectOption('qcow2');
    await page.getByTestId('import-submit').click();
    await page.getByTestId('volumes').getByText('imported/web-disk').waitFor({ timeout: 120_000 });
    await page.locator(`[data-testid=tasks] tr[data-task-kind="volume.import"][data-task-state=success]`).first().waitFor({ timeout: 30_000 });
    log('disk image imported from the datastore page');
    await shot('imported');

    // A VM that boots the imported disk through firmware: QEMU prints the
    // boot sector's line on the serial console.
    const fwName = `${vmName}-fw`;
    // The API's refusal of a boot ISO, in the wizard's words: "The ISO",
    // not the API's field name boot.iso. Nothing is made.
    await page.getByTestId('tree-new-vm').click();
    await page.getByTestId('wizard-name').fill(`${vmName}-iso`);
    await page.getByTestId('wizard-iso-boot').check();
    await page.getByTestId('wizard-iso').fill('/nonexistent/installer.iso');
    for (let i = 0; i < 4; i++) await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-finish').click();
    await page.getByText('The ISO /nonexistent/installer.iso is not a file on the host').waitFor();
    if (await page.getByText('boot.iso').count()) fail("the wizard shows the API's field name boot.iso");
    if (await apiVm(`${vmName}-iso`)) fail('a VM was made with a refused ISO');
    log("a refused ISO is reported in the wizard's words");
    await page.goto(`${base}/#/host`);
    await page.getByTestId('tree-new-vm').click();
    await page.getByTestId('wizard-name').fill(fwName);
    await page.getByTestId('wizard-disk-boot').check();
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-memory').fill('128');
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-disk-0').waitFor();
    await page.getByLabel('Disk 0 datastore').selectOption('local');
    await page.getByLabel('Disk 0 existing volume').fill('imported/web-disk');
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-nic-0').waitFor();
    await page.getByTestId('wizard-nic-0').getByRole('button', { name: 'Remove' }).click();
    await page.getByTestId('wizard-next').click();
    await page.getByTestId('wizard-power-on').check();
    await page.getByTestId('wizard-finish').click();
    await page.waitForURL(`**/#/vms/${fwName}`, { timeout: 120_000 });
    await until('the firmware VM to run', 120_000, async () => (await apiVm(fwName))?.state === 'running');
    const fw = await apiVm(fwName);
    if (fw.driver !== 'qemu' || !fw.driver_reason.includes('firmware')) fail(`the disk-boot VM: ${JSON.stringify(fw)}`);
    await page.getByTestId('tab-console').click();
    await until('the boot sector line in the browser console', 120_000, async () => (await terminalText()).includes('SFERA-MBR-BOOT-OK'), 1000);
    log('imported disk booted through firmware (seen in the browser console)');
    await shot('firmware-boot');
    await page.getByTestId('tab-summary').click();
    await confirmed('power-off');
    await until('the firmware VM to stop', 60_000, async () => (await apiVm(fwName))?.state === 'stopped');
    await page.getByTestId('delete').and(page.locator(':enabled')).click();
    await page.getByTestId('delete-disks').uncheck();
    await page.getByTestId('confirm-delete').click();
    await until('the firmware VM to be gone', 60_000, async () => (await apiVm(fwName)) === null);
  }

  // The events pane tells the story.
  await page.getByRole('tab', { name: 'Events' }).click();
  for (const kind of ['vm.created', 'vm.powered_on', 'vm.paused', 'vm.resumed', 'vm.powered_off', 'vm.deleted', ...(importImage ? ['volume.imported'] : [])]) {
    await page.getByTestId('events').getByText(kind, { exact: true }).first().waitFor({ timeout: 10_000 });
  }
});
