// What the end-to-end scripts share: their environment, logging, polling,
// the browser session (with the page's own errors collected and
// screenshots), and the ending (PASS, or FAIL with the page's text).
//
// Environment: SFERA_URL, SFERA_PASSWORD_FILE (or SFERA_PASSWORD),
// CHROMIUM, SFERA_ARTIFACTS (screenshots: on failure; of each step when
// SFERA_SCREENSHOTS=1).

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const base = process.env.SFERA_URL ?? 'https://127.0.0.1:8443';
export const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const artifacts = process.env.SFERA_ARTIFACTS ?? 'test-results';
const everyStep = process.env.SFERA_SCREENSHOTS === '1';
export const password =
  process.env.SFERA_PASSWORD ??
  (process.env.SFERA_PASSWORD_FILE ? readFileSync(process.env.SFERA_PASSWORD_FILE, 'utf8').trim() : null);

const started = Date.now();
export const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`);

export function fail(msg) {
  throw new Error(msg);
}

if (+process.versions.node.split('.')[0] < 20) fail(`Node.js ${process.version}: playwright-core needs 20 or later`);
if (!password) fail('No password: set SFERA_PASSWORD_FILE or SFERA_PASSWORD');
if (!existsSync(executablePath)) fail(`No browser at ${executablePath} (apt-get install chromium)`);
mkdirSync(artifacts, { recursive: true });

/** Polls `probe` until it returns a truthy value. */
export async function until(what, timeoutMs, probe, everyMs = 500) {
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

/** A headless chromium with one page of `height` pixels; the page's own
 * errors are collected (a refused request, logged by the browser itself,
 * is not one), and `shot` takes a numbered screenshot. */
export async function openBrowser(height) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // As root in a container: no user namespace sandbox.
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => {
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
  return { browser, page, consoleErrors, shot };
}

/** Runs `steps` in the session `s`: PASS when they end and the page logged
 * no error of its own; otherwise FAIL with the reason, a screenshot and
 * the page's text, and exit status 1. */
export async function run(s, steps) {
  try {
    await steps();
    if (s.consoleErrors.length) fail(`the page logged errors: ${s.consoleErrors.join(' | ')}`);
    log('PASS');
    await s.browser.close();
  } catch (e) {
    console.error(`FAIL: ${e.message}`);
    try {
      await s.shot('failure', true);
      console.error(`page text:\n${(await s.page.locator('body').innerText()).slice(0, 3000)}`);
    } catch {
      // The page is gone too.
    }
    if (s.consoleErrors.length) console.error(`browser console errors: ${s.consoleErrors.join(' | ')}`);
    await s.browser.close();
    process.exit(1);
  }
}
