#!/usr/bin/env node
// End-to-end test of the dashboard in a real browser, against a real Tollgate.
//
// Starts fake-upstream and `tollgate serve` (both providers at the fake, free ports, a store in
// a temporary folder), creates an admin account, seeds usage with real proxied calls of a few
// users, then drives Debian's Chromium (playwright-core; no browser is downloaded) through the
// dashboard served by Tollgate itself at `/` on the admin port:
//   sign in (keyboard only) · the overview's numbers equal the admin API's and the calls made ·
//   the data refreshes without a reload · users: search, sort · block a user in the UI → their
//   next proxied call gets 403 · unblock → 200 · change a limit → the proxy enforces it, clear it ·
//   user detail · audit log · settings · CSV export downloads every row · alerts: a
//   `user_limit` rule fires when traffic pushes a user past 80% of their daily tokens (and when a
//   limit is lowered below a user's usage), the webhook (a receiver in this process) takes it,
//   signed, and the alerts page and the menu's badge show it · plans: a user whose token names
//   the pro plan is listed under it by the users page's plan filter, their page shows the plan and
//   each limit's source (plan, then override once one is set in the UI), the plans page lists
//   both plans of gateway.toml · session expiry →
//   sign-in page and back · sign out · every page at 1280×800 and 360×740, screenshotted into
//   test-artifacts/, without horizontal scroll at 360 px · no request leaves 127.0.0.1.
// Everything it started is stopped on exit, failure included. Exit code 1 on any failed check.
//
// Env: TOLLGATE_BIN, FAKE_UPSTREAM_BIN (default ../target/debug/{tollgate,fake-upstream}),
// CHROMIUM (default /usr/bin/chromium), E2E_ARTIFACTS (default ../test-artifacts),
// E2E_KEEP=1 keeps the temporary folder (config, database, logs). E2E_DATABASE_URL: run the
// gateway on that PostgreSQL database (`store.backend = "postgres"`) instead of a SQLite file.

import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const TOLLGATE = path.resolve(process.env.TOLLGATE_BIN ?? path.join(repo, 'target/debug/tollgate'));
const FAKE = path.resolve(process.env.FAKE_UPSTREAM_BIN ?? path.join(repo, 'target/debug/fake-upstream'));
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = path.resolve(process.env.E2E_ARTIFACTS ?? path.join(repo, 'test-artifacts'));
const started = Date.now();

const JWT_SECRET = 'e2e-secret-that-is-long-enough-for-hs256-0123456789';
const OPENAI_KEY = 'sk-e2e-fake';
const GEMINI_KEY = 'AIza-e2e-fake';
const ADMIN = 'e2e';
const PASSWORD = 'correct horse battery staple';
const WEBHOOK_SECRET = 'e2e-webhook-secret';

// Prices of the seeded models, USD per million tokens = nano-USD per token.
const PRICES = {
  'gpt-4o-mini': { input: 0.15, output: 0.6 },
  'gemini-2.5-flash': { input: 0.3, output: 2.5 },
};

// === bookkeeping ===

const children = [];
let browser = null;
let hookServer = null;
let tmp = null;
let passed = 0;
let failed = 0;
const failures = [];

function log(msg) {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  console.log(`[${t}s] ${msg}`);
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    log(`ok   ${name}`);
  } catch (e) {
    failed++;
    failures.push(name);
    log(`FAIL ${name}\n       ${String(e?.stack ?? e).split('\n').slice(0, 6).join('\n       ')}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function assertEq(actual, expected, msg) {
  if (JSON.stringify(actual) !== JSON.stringify(expected)) {
    throw new Error(`${msg}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

async function waitFor(what, fn, timeoutMs = 10_000, everyMs = 100) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function cleanup() {
  if (browser) {
    await browser.close().catch(() => {});
    browser = null;
  }
  if (hookServer) {
    hookServer.closeAllConnections?.();
    await new Promise((r) => hookServer.close(r));
    hookServer = null;
  }
  for (const c of children.reverse()) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await once(c, 'exit').catch(() => {});
      clearTimeout(t);
    }
  }
  children.length = 0;
  if (tmp && !process.env.E2E_KEEP && failed === 0) fs.rmSync(tmp, { recursive: true, force: true });
  else if (tmp) log(`kept ${tmp} (config, database, logs)`);
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    log(`${sig}: stopping`);
    failed++;
    cleanup().finally(() => process.exit(130));
  });
}

// === processes ===

function freePort() {
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

function start(name, cmd, args, env) {
  const out = fs.openSync(path.join(tmp, `${name}.log`), 'a');
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', out] });
  children.push(child);
  child.stdout.on('data', (d) => fs.appendFileSync(path.join(tmp, `${name}.log`), d));
  child.on('exit', (code, sig) => {
    if (code !== 0 && sig !== 'SIGTERM' && sig !== 'SIGKILL') log(`${name} exited (${code ?? sig}); see ${name}.log`);
  });
  return child;
}

function run(cmd, args, { env = {}, input } = {}) {
  const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, input, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

const PG_URL = process.env.E2E_DATABASE_URL ?? '';
const tollgateEnv = {
  JWT_SECRET,
  OPENAI_API_KEY: OPENAI_KEY,
  GEMINI_API_KEY: GEMINI_KEY,
  E2E_WEBHOOK_SECRET: WEBHOOK_SECRET,
  RUST_LOG: 'warn',
  ...(PG_URL ? { DATABASE_URL: PG_URL } : {}),
};

// === the proxy's clients ===

let PROXY = '';
let ADMIN_URL = '';
let CONFIG = '';
let adminJwt = '';
const jwts = {};

function mint(sub, extra = []) {
  return run(TOLLGATE, ['token', '--sub', sub, '--ttl', '2h', '--config', CONFIG, ...extra], { env: tollgateEnv });
}

/** The calls this test made, to derive the expected figures. */
const made = [];

function words(n, seed) {
  return Array.from({ length: n }, (_, i) => `w${seed}x${i}`).join(' ');
}

async function openaiChat(user, { model = 'gpt-4o-mini', nWords = 5, stream = false, maxTokens } = {}) {
  const res = await fetch(`${PROXY}/openai/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${jwts[user]}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model, stream, max_tokens: maxTokens, messages: [{ role: 'user', content: words(nWords, made.length) }] }),
  });
  const text = await res.text();
  const call = { user, model, provider: 'openai', status: res.status, input: 0, output: 0, source: 'none' };
  if (res.ok) {
    // The fake's usage: W + 3 in, 20 out (fake-upstream/README.md).
    call.input = nWords + 3;
    call.output = 20;
    call.source = 'reported';
    if (!stream) {
      const usage = JSON.parse(text).usage;
      assertEq([usage.prompt_tokens, usage.completion_tokens], [call.input, call.output], 'usage the fake reported');
    }
  }
  made.push(call);
  return call;
}

async function geminiGenerate(user, { model = 'gemini-2.5-flash', nWords = 4 } = {}) {
  const res = await fetch(`${PROXY}/gemini/v1beta/models/${model}:generateContent`, {
    method: 'POST',
    headers: { 'x-goog-api-key': jwts[user], 'content-type': 'application/json' },
    body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: words(nWords, made.length) }] }] }),
  });
  const body = await res.json();
  const call = { user, model, provider: 'gemini', status: res.status, input: 0, output: 0, source: 'none' };
  if (res.ok) {
    call.input = body.usageMetadata.promptTokenCount;
    call.output = body.usageMetadata.candidatesTokenCount;
    call.source = 'reported';
    assertEq(call.input, nWords + 3, 'gemini prompt tokens');
  }
  made.push(call);
  return call;
}

/** An OpenAI stream the upstream cuts after 3 pieces, before its usage chunk: Tollgate records
 * an estimate (prompt estimate + relayed text). */
async function openaiCutStream(user) {
  // A pause between pieces, so that the head and the first chunks reach Tollgate before the cut.
  const model = 'gpt-4o-mini-cd30-cut3';
  let status = 0;
  try {
    const res = await fetch(`${PROXY}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwts[user]}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, stream: true, messages: [{ role: 'user', content: 'tell me a long story please' }] }),
    });
    status = res.status;
    await res.text();
  } catch {
    // The connection is aborted: expected.
  }
  made.push({ user, model, provider: 'openai', status: status || 200, input: null, output: null, source: 'estimated' });
}

function costOf(call) {
  const price = Object.entries(PRICES).find(([prefix]) => call.model.startsWith(prefix))?.[1];
  if (!price || call.input === null) return 0;
  // USD per million tokens = nano-USD per token (exact for these prices).
  return Math.round(call.input * price.input * 1000) + Math.round(call.output * price.output * 1000);
}

async function adminApi(pathname, { method = 'GET', body } = {}) {
  const headers = { authorization: `Bearer ${adminJwt}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${ADMIN_URL}${pathname}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!res.ok) throw new Error(`${pathname}: ${res.status} ${await res.text()}`);
  return res.json();
}

// === the webhook receiver ===

/** What the receiver took: each alert's body, and whether its signature was right. */
const hooked = [];

/** A webhook receiver on a free loopback port: takes every POST to /hook (204). */
async function startHook() {
  hookServer = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const expected = `sha256=${crypto.createHmac('sha256', WEBHOOK_SECRET).update(raw).digest('hex')}`;
      let body = null;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        // Recorded as null: the check on the alert fails.
      }
      hooked.push({ path: req.url, body, signed: req.headers['x-tollgate-signature'] === expected });
      res.writeHead(204).end();
    });
  });
  hookServer.listen(0, '127.0.0.1');
  await once(hookServer, 'listening');
  return `http://127.0.0.1:${hookServer.address().port}/hook`;
}

// === the browser ===

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 360, height: 740 };

/** Wait until the page shows data: no skeleton, spinner ring or splash left. */
async function settled(page) {
  await page.waitForFunction(
    () => !document.querySelector('.skeleton, .loading-block, .splash') && document.querySelector('main, .signin'),
    null,
    { timeout: 15_000 },
  );
  await page.waitForTimeout(250);
}

async function noHorizontalScroll(page, name) {
  const m = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    bodyScroll: document.body.scrollWidth,
  }));
  assert(
    m.scrollWidth <= m.innerWidth && m.bodyScroll <= m.innerWidth,
    `${name}: the page scrolls sideways at ${m.innerWidth}px (scrollWidth ${m.scrollWidth}, body ${m.bodyScroll})`,
  );
}

async function shoot(page, name, fullPage = true) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage });
}

/** Screenshot the page at desktop and phone width; at 360 px nothing may scroll sideways. */
async function bothWidths(page, name) {
  await page.setViewportSize(DESKTOP);
  await settled(page);
  await shoot(page, `${name}-desktop`);
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(300);
  await settled(page);
  await noHorizontalScroll(page, name);
  await shoot(page, `${name}-phone`);
  await page.setViewportSize(DESKTOP);
  await page.waitForTimeout(200);
}

async function exactOf(page, testId) {
  const el = page.getByTestId(testId);
  const [exact, text] = await Promise.all([el.getAttribute('data-exact'), el.textContent()]);
  return { exact: Number(exact), text: text.trim() };
}

const intFmt = new Intl.NumberFormat('en-US');

/** Unix ms as the dashboard shows it in UTC (the gateway's `limits.timezone` here). */
function utc(ts) {
  return new Date(ts).toISOString().slice(0, 19).replace('T', ' ');
}

// === the run ===

async function main() {
  for (const [what, file] of [['TOLLGATE_BIN', TOLLGATE], ['FAKE_UPSTREAM_BIN', FAKE], ['CHROMIUM', CHROMIUM]]) {
    if (!fs.existsSync(file)) throw new Error(`${what}: ${file} does not exist`);
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tollgate-e2e-'));
  log(`temporary folder ${tmp}; screenshots into ${ARTIFACTS}`);

  // fake-upstream on a free port; it prints the address once bound.
  const fake = start('fake-upstream', FAKE, ['--listen', '127.0.0.1:0'], {
    FAKE_EXPECT_OPENAI_KEY: OPENAI_KEY,
    FAKE_EXPECT_GEMINI_KEY: GEMINI_KEY,
  });
  const fakeAddr = await new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('fake-upstream did not start')), 15_000);
    fake.stdout.on('data', (d) => {
      buf += d;
      const m = /listening on (\S+)/.exec(buf);
      if (m) {
        clearTimeout(t);
        resolve(m[1]);
      }
    });
    fake.on('exit', () => reject(new Error('fake-upstream exited')));
  });
  const upstream = `http://${fakeAddr}`;

  const hookUrl = await startHook();
  const [proxyPort, adminPort] = [await freePort(), await freePort()];
  PROXY = `http://127.0.0.1:${proxyPort}`;
  ADMIN_URL = `http://127.0.0.1:${adminPort}`;
  CONFIG = path.join(tmp, 'gateway.toml');
  fs.writeFileSync(
    CONFIG,
    `[server]
listen = "127.0.0.1:${proxyPort}"
watch_config = false
shutdown_grace_secs = 2

[admin]
listen = "127.0.0.1:${adminPort}"
login_attempts_per_minute = 100

[auth]
jwt_secret_env = "JWT_SECRET"

[limits]
daily_tokens = 100000
monthly_tokens = 1000000
requests_per_minute = 600
timezone = "UTC"
default_plan = "free"

# Every user but frank calls without a plan claim: on "free", which changes nothing the checks
# before the plans' count on ([limits]'s daily tokens stay in force).
[plans.free]
monthly_tokens = 500000
models = ["gpt-4o-mini*", "gemini-2.5-flash*"]

[plans.pro]
daily_tokens = 250000
requests_per_minute = 1200
deny_models = ["o1-pro*"]
max_output_tokens = 4096
clamp_max_output_tokens = true

[store]
path = "${path.join(tmp, 'tollgate.db').replaceAll('\\', '/')}"
commit_interval_ms = 10
${PG_URL ? 'backend = "postgres"' : ''}

[log]
level = "warn"

[[providers]]
name = "openai"
kind = "openai"
prefix = "/openai"
upstream = "${upstream}"
api_key_env = "OPENAI_API_KEY"

[[providers]]
name = "gemini"
kind = "gemini"
prefix = "/gemini"
upstream = "${upstream}"
api_key_env = "GEMINI_API_KEY"

[pricing."gpt-4o-mini"]
input = ${PRICES['gpt-4o-mini'].input}
output = ${PRICES['gpt-4o-mini'].output}

[pricing."gemini-2.5-flash"]
input = ${PRICES['gemini-2.5-flash'].input}
output = ${PRICES['gemini-2.5-flash'].output}

[[alerts]]
name = "daily tokens"
kind = "user_limit"
percent = [80, 100]
windows = ["day"]

[[webhooks]]
name = "e2e"
url = "${hookUrl}"
secret_env = "E2E_WEBHOOK_SECRET"
`,
  );

  run(TOLLGATE, ['admin', 'add', ADMIN, '--config', CONFIG], { env: tollgateEnv, input: `${PASSWORD}\n` });
  start('tollgate', TOLLGATE, ['serve', '--config', CONFIG], tollgateEnv);
  await waitFor('tollgate to answer', async () => (await fetch(`${ADMIN_URL}/readyz`)).ok, 30_000, 200);
  log(`tollgate: proxy ${PROXY}, admin ${ADMIN_URL}; fake upstream ${upstream}`);

  adminJwt = mint('ops', ['--admin']);
  jwts.alice = mint('alice', ['--email', 'alice@example.com', '--name', 'Alice Example']);
  jwts.bob = mint('bob', ['--email', 'bob@example.com']);
  jwts.carol = mint('carol');
  jwts.dave = mint('dave');
  jwts.erin = mint('erin');
  jwts.frank = mint('frank', ['--plan', 'pro']);

  // Seed: a few users on both providers, a stream, an upstream error, a cut stream (estimated).
  await openaiChat('alice', { nWords: 12 });
  await openaiChat('alice', { nWords: 30 });
  await openaiChat('alice', { nWords: 7, stream: true });
  await geminiGenerate('alice', { nWords: 9 });
  await openaiChat('bob', { nWords: 5 });
  await geminiGenerate('bob', { nWords: 40 });
  await openaiChat('carol', { nWords: 3 });
  await openaiChat('carol', { model: 'gpt-4o-mini-e429', nWords: 3 });
  await openaiCutStream('dave');
  assert(made.filter((c) => c.source === 'reported').every((c) => c.status === 200), 'the seeded calls went through');
  await waitFor(
    'the calls to be recorded',
    async () => (await adminApi('/api/admin/stats')).today.calls === made.length,
    15_000,
    100,
  );
  log(`seeded ${made.length} calls for alice, bob, carol, dave`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  const context = await browser.newContext({ viewport: DESKTOP, acceptDownloads: true, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const offsite = [];
  const consoleErrors = [];
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(ADMIN_URL + '/') && !u.startsWith('data:') && !u.startsWith('blob:')) offsite.push(u);
  });
  page.on('console', (m) => {
    // The browser logs every 4xx answer; 401 (signed out) and 404 (an unknown user) are expected.
    if (m.type() === 'error' && !/status of (401|404)\b/.test(m.text())) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // --- sign-in ---
  await check('an unknown visitor is sent to the sign-in page', async () => {
    await page.goto(`${ADMIN_URL}/users`);
    await page.getByRole('heading', { name: 'Sign in to Tollgate' }).waitFor();
    const url = new URL(page.url());
    assertEq(url.pathname, '/login', 'path');
    assertEq(url.searchParams.get('next'), '/users', 'next');
    await bothWidths(page, '01-sign-in');
  });

  await check('a wrong password is refused with a message', async () => {
    await page.getByLabel('Account name').fill(ADMIN);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').filter({ hasText: 'Wrong account name or password' }).waitFor();
  });

  await check('sign in with the keyboard alone, back to the page asked for', async () => {
    await page.goto(`${ADMIN_URL}/login`);
    await page.getByLabel('Account name').waitFor();
    // The account field has the focus; Tab reaches the password; Enter submits.
    await page.keyboard.type(ADMIN);
    await page.keyboard.press('Tab');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Overview' }).waitFor();
    assertEq(new URL(page.url()).pathname, '/', 'after sign-in');
    assertEq((await page.getByTestId('admin-name').textContent()).trim(), ADMIN, 'signed in as');
  });

  // --- overview ---
  const reported = made.filter((c) => c.source === 'reported');
  await check('the overview’s numbers equal the database’s and the calls made', async () => {
    await page.getByTestId('calls-today').waitFor();
    await settled(page);
    const api = await adminApi('/api/admin/stats');
    const ui = {};
    for (const id of ['users-total', 'users-active-today', 'users-blocked', 'calls-today', 'calls-month', 'tokens-today', 'tokens-month', 'cost-today', 'cost-month', 'errors-today']) {
      ui[id] = await exactOf(page, id);
    }
    // The page shows what the admin API reads from the database…
    assertEq(ui['users-total'].exact, api.users_total, 'users total');
    assertEq(ui['users-active-today'].exact, api.users_active_today, 'active today');
    assertEq(ui['users-blocked'].exact, api.users_blocked, 'blocked');
    assertEq(ui['calls-today'].exact, api.today.calls, 'calls today');
    assertEq(ui['calls-month'].exact, api.month.calls, 'calls this month');
    assertEq(ui['tokens-today'].exact, api.today.total_tokens, 'tokens today');
    assertEq(ui['tokens-month'].exact, api.month.total_tokens, 'tokens this month');
    assertEq(ui['cost-today'].exact, api.today.cost_nano_usd, 'cost today');
    assertEq(ui['cost-month'].exact, api.month.cost_nano_usd, 'cost this month');
    assertEq(ui['errors-today'].exact, api.today.errors, 'errors today');
    // … formatted for people …
    assertEq(ui['calls-today'].text, intFmt.format(api.today.calls), 'calls shown');
    assertEq(ui['tokens-today'].text, intFmt.format(api.today.total_tokens), 'tokens shown');
    assert(/^\$\d[\d,]*\.\d{2,}$/.test(ui['cost-today'].text), `cost shown as USD: ${ui['cost-today'].text}`);
    // … and what the calls this test made add up to.
    const users = new Set(made.map((c) => c.user));
    assertEq(api.users_total, users.size, 'users seen');
    assertEq(api.users_active_today, users.size, 'users active today');
    assertEq(api.today.calls, made.length, 'calls made');
    assertEq(api.today.errors, made.filter((c) => c.status >= 400).length, 'errors made');
    assertEq(api.today.estimated_calls, 1, 'estimated calls');
    // The estimated call's tokens and cost are Tollgate's estimate: read back from its row.
    const dave = await adminApi('/api/admin/user/dave/usage?days=7');
    const est = dave.calls.find((c) => c.usage_source === 'estimated');
    assert(est, 'the cut stream was recorded as estimated');
    const tokens = reported.reduce((s, c) => s + c.input + c.output, 0) + est.total_tokens;
    const cost = reported.reduce((s, c) => s + costOf(c), 0) + (est.cost_nano_usd ?? 0);
    assertEq(api.today.total_tokens, tokens, 'tokens made');
    assertEq(api.today.cost_nano_usd, cost, 'cost made');
    const share = await page.getByTestId('estimated-today').textContent();
    assertEq(share.trim(), `${((1 / made.length) * 100).toFixed(1)}%`, 'estimated share shown');
    assertEq((await page.getByTestId('timezone').textContent()).trim(), 'UTC', 'time zone shown');
  });

  await check('the overview has charts and top users', async () => {
    await page.locator('#charts .chart .recharts-wrapper').first().waitFor();
    assertEq(await page.locator('#charts .chart').count(), 2, 'two charts');
    await page.getByRole('button', { name: '7 days' }).click();
    await page.getByRole('img', { name: 'Tokens per day by model over the last 7 days' }).locator('.recharts-wrapper').waitFor();
    const top = page.getByRole('region', { name: 'Top users this month' });
    await top.getByRole('link', { name: /Alice Example/ }).waitFor();
    await bothWidths(page, '02-overview');
  });

  await check('the overview refreshes by itself (no reload)', async () => {
    const before = (await exactOf(page, 'calls-today')).exact;
    await page.evaluate(() => {
      window.__noReload = true;
    });
    await openaiChat('alice', { nWords: 2 });
    await waitFor('the calls card to count the new call', async () => (await exactOf(page, 'calls-today')).exact === before + 1, 35_000, 250);
    assert(await page.evaluate(() => window.__noReload === true), 'the page was reloaded');
  });

  // --- alerts, before any fired ---
  await check('alerts: none fired yet — the page names the rule in force, the menu shows no count', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Alerts' }).click();
    await page.getByRole('heading', { name: 'Alerts' }).waitFor();
    await page.getByText('No alert has fired yet').waitFor();
    await page.getByText('1 rule is in force (daily tokens)', { exact: false }).waitFor();
    const api = await adminApi('/api/admin/alerts');
    assertEq([api.alerts, api.last_24h], [[], 0], 'alerts in the database');
    assertEq((await page.getByTestId('alerts-24h').textContent()).trim(), '0 alerts in the last 24 hours', 'count on the page');
    assertEq(await page.getByTestId('alert-count').count(), 0, 'no count in the menu');
    await bothWidths(page, '11-alerts-none');
  });

  // --- users ---
  await check('users: the table lists every user with usage bars, search and sort work', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' }).click();
    await page.getByRole('heading', { name: 'Users' }).waitFor();
    await settled(page);
    for (const u of ['alice', 'bob', 'carol', 'dave']) await page.locator(`tr[data-user="${u}"]`).waitFor();
    await page.getByRole('meter', { name: 'Tokens today of alice' }).waitFor();
    await page.getByLabel('Search').fill('ali');
    await waitFor('the search', async () => (await page.locator('tr[data-user]').count()) === 1);
    await page.locator('tr[data-user="alice"]').waitFor();
    await page.getByLabel('Search').fill('');
    await waitFor('all users again', async () => (await page.locator('tr[data-user]').count()) === 4);
    await page.getByRole('button', { name: /^Cost this month/ }).click();
    const api = await adminApi('/api/admin/users?sort=cost_month&order=desc&limit=25');
    await waitFor('the sorted order', async () => {
      const ids = await page.locator('tr[data-user]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-user')));
      return JSON.stringify(ids) === JSON.stringify(api.users.map((u) => u.id));
    });
    await bothWidths(page, '03-users');
  });

  await check('block a user in the UI → their next proxied call gets 403', async () => {
    const before = await openaiChat('bob', { nWords: 2 });
    assertEq(before.status, 200, 'bob before the block');
    await page.getByRole('button', { name: 'Block bob' }).click();
    const dialog = page.getByRole('dialog', { name: 'Block bob?' });
    await dialog.waitFor();
    // A reason is required; the confirmation button says what it does.
    await dialog.getByRole('button', { name: 'Block bob' }).click();
    await dialog.getByText(/Say why/).waitFor();
    await dialog.getByLabel(/Reason/).fill('e2e: scraping the API');
    await dialog.getByRole('button', { name: 'Block bob' }).click();
    await dialog.waitFor({ state: 'detached' });
    await page.locator('tr[data-user="bob"]').getByText('Blocked', { exact: true }).waitFor();
    const after = await openaiChat('bob', { nWords: 2 });
    assertEq(after.status, 403, 'bob after the block');
    // Refused before the upstream, and recorded (status 403, no usage) like every call.
    const other = await openaiChat('alice', { nWords: 2 });
    assertEq(other.status, 200, 'alice is not affected');
    const user = (await adminApi('/api/admin/users?search=bob')).users[0];
    assertEq([user.blocked, user.blocked_reason], [true, 'e2e: scraping the API'], 'bob in the database');
  });

  await check('unblock in the UI → the calls go through again', async () => {
    await page.getByRole('button', { name: 'Unblock bob' }).click();
    const dialog = page.getByRole('dialog', { name: 'Unblock bob?' });
    await dialog.getByText('e2e: scraping the API').waitFor();
    await dialog.getByRole('button', { name: 'Unblock bob' }).click();
    await dialog.waitFor({ state: 'detached' });
    await page.getByRole('button', { name: 'Block bob' }).waitFor();
    assertEq((await openaiChat('bob', { nWords: 2 })).status, 200, 'bob after the unblock');
  });

  await check('change a limit in the UI → the proxy enforces it; clearing it restores the default', async () => {
    await page.getByRole('button', { name: 'Edit the limits of carol' }).click();
    const dialog = page.getByRole('dialog', { name: 'Limits for carol' });
    await dialog.getByLabel('Tokens per day', { exact: true }).fill('10');
    await dialog.getByLabel('Cost per month (USD)').fill('2.5');
    await bothWidthsDialog(page, '04-limits-dialog');
    await dialog.getByRole('button', { name: 'Save limits' }).click();
    await dialog.waitFor({ state: 'detached' });
    let carol = (await adminApi('/api/admin/users?search=carol')).users[0];
    assertEq(carol.overrides.daily_tokens, 10, 'daily tokens override');
    assertEq(carol.overrides.monthly_cost_nano_usd, 2_500_000_000, 'monthly cost override (USD → nano-USD)');
    assertEq(carol.limits.daily_tokens, 10, 'limit in force');
    const refused = await openaiChat('carol', { nWords: 2 });
    assertEq(refused.status, 429, 'carol over her new daily limit');
    // The "daily tokens" rule: her usage is now past 100% of her limit; her call (refused, and
    // recorded) has the gateway look at her.
    const fired = await waitFor(
      'the alert about carol',
      async () => (await adminApi('/api/admin/alerts')).alerts.find((a) => a.subject === 'carol'),
      15_000,
      200,
    );
    assertEq([fired.rule, fired.kind, fired.level], ['daily tokens', 'user_limit', 'day tokens 100%'], 'carol’s alert');
    await page.locator('tr[data-user="carol"]').getByText('Own limits').waitFor();

    await page.getByRole('button', { name: 'Edit the limits of carol' }).click();
    await dialog.getByLabel('Tokens per day', { exact: true }).waitFor();
    assertEq(await dialog.getByLabel('Tokens per day', { exact: true }).inputValue(), '10', 'the editor shows the override');
    await dialog.getByRole('button', { name: 'Clear all' }).click();
    await dialog.getByRole('button', { name: 'Save limits' }).click();
    await dialog.waitFor({ state: 'detached' });
    carol = (await adminApi('/api/admin/users?search=carol')).users[0];
    assertEq(carol.overrides.daily_tokens, null, 'override cleared');
    assertEq(carol.overrides.monthly_cost_nano_usd, null, 'cost override cleared');
    assertEq(carol.limits.daily_tokens, 100000, 'back to the default');
    assertEq((await openaiChat('carol', { nWords: 2 })).status, 200, 'carol after clearing');
  });

  // --- user detail ---
  await check('user detail: chart, models, recent calls, quota, audit entries', async () => {
    await page.locator('tr[data-user="bob"]').getByRole('link', { name: /bob/ }).click();
    await page.getByRole('heading', { name: /^bob/ }).waitFor();
    await settled(page);
    const api = await adminApi('/api/admin/user/bob/usage?days=30&limit=25');
    const rows = page.locator('#user-calls tr[data-call]');
    await waitFor('the recent calls', async () => (await rows.count()) === api.calls.length);
    assertEq(await rows.count(), made.filter((c) => c.user === 'bob').length, 'bob’s calls made');
    await page.locator('#user-chart .recharts-wrapper').waitFor();
    await page.locator('#user-models').getByText('gemini-2.5-flash').waitFor();
    await page.getByTestId('quota-day').waitFor();
    await page.locator('#quota').getByText('Resets').first().waitFor();
    const audit = page.locator('#user-audit tr[data-audit]');
    await waitFor('the audit entries about bob', async () => (await audit.count()) === 2);
    assertEq(
      await audit.evaluateAll((r) => r.map((x) => x.getAttribute('data-audit'))),
      ['unblock', 'block'],
      'audit entries about bob',
    );
    await bothWidths(page, '05-user-detail');
  });

  // --- audit, settings ---
  await check('audit log: every admin action of this run', async () => {
    await page.goto(`${ADMIN_URL}/audit`);
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    await settled(page);
    const actions = await page.locator('tr[data-audit]').evaluateAll((r) => r.map((x) => x.getAttribute('data-audit')));
    for (const a of ['set_limits', 'unblock', 'block', 'login', 'login_failed']) assert(actions.includes(a), `audit has ${a}: ${actions}`);
    assertEq(actions.filter((a) => a === 'set_limits').length, 2, 'two limit changes');
    await bothWidths(page, '06-audit');
  });

  await check('settings: the configuration in force and the price table', async () => {
    await page.goto(`${ADMIN_URL}/settings`);
    await page.getByRole('heading', { name: 'Settings' }).waitFor();
    await settled(page);
    const prices = page.locator('#prices');
    await prices.getByText('gpt-4o-mini', { exact: true }).waitFor();
    await prices.getByText('gemini-2.5-flash', { exact: true }).waitFor();
    await page.locator('#secrets').getByText('$JWT_SECRET').waitFor();
    const body = await page.locator('main').textContent();
    assert(!body.includes(JWT_SECRET) && !body.includes(OPENAI_KEY), 'no secret on the page');
    await bothWidths(page, '07-settings');
  });

  // --- CSV ---
  await check('CSV export downloads every call', async () => {
    await page.goto(`${ADMIN_URL}/export`);
    await page.getByRole('heading', { name: 'CSV export' }).waitFor();
    await settled(page);
    await page.getByRole('button', { name: 'Today' }).click();
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('csv-download').click()]);
    const file = path.join(tmp, 'export.csv');
    await download.saveAs(file);
    const lines = fs.readFileSync(file, 'utf8').split('\r\n').filter(Boolean);
    const header = lines[0].split(',');
    assertEq(header.slice(0, 4), ['id', 'request_id', 'ts', 'user_id'], 'CSV header');
    assertEq(lines.length - 1, made.length, 'one row per call made');
    const col = (name) => lines.slice(1).map((l) => l.split(',')[header.indexOf(name)]);
    assertEq([...new Set(col('user_id'))].sort(), ['alice', 'bob', 'carol', 'dave'], 'users in the CSV');
    const tokens = col('total_tokens').reduce((s, v) => s + Number(v), 0);
    assertEq(tokens, (await adminApi('/api/admin/stats')).today.total_tokens, 'CSV tokens = the database’s');
    await bothWidths(page, '08-export');
  });

  // --- alerts ---
  await check('alerts: traffic past 80% of a daily limit fires an alert, delivered to the webhook, shown on the page and counted in the menu', async () => {
    await adminApi('/api/admin/user/erin/limits', { method: 'PUT', body: { daily_tokens: 100 } });
    // 28 tokens a call (8 in, 20 out): 28, 56, then 84 of 100 — the third passes 80%.
    for (let i = 1; i <= 3; i++) {
      const call = await openaiChat('erin', { nWords: 5, maxTokens: 20 });
      assertEq([call.status, call.input + call.output], [200, 28], `erin’s call ${i}`);
      await waitFor('erin’s call to be recorded', async () => (await adminApi('/api/admin/users?search=erin')).users[0]?.today.total_tokens === 28 * i);
    }
    const alert = await waitFor(
      'the alert about erin, delivered',
      async () => {
        const a = (await adminApi('/api/admin/alerts')).alerts.find((x) => x.subject === 'erin');
        return a?.delivery === 'delivered' ? a : null;
      },
      15_000,
      200,
    );
    assertEq([alert.rule, alert.kind, alert.level, alert.attempts], ['daily tokens', 'user_limit', 'day tokens 80%', 1], 'erin’s alert');
    assert(alert.message.includes('84 of 100 tokens'), `the message: ${alert.message}`);
    assert(alert.delivered_at >= alert.ts, 'delivered after it fired');
    const took = hooked.filter((h) => h.body?.subject === 'erin');
    assertEq(took.length, 1, 'the webhook took erin’s alert once');
    assertEq([took[0].path, took[0].signed, took[0].body.id, took[0].body.level], ['/hook', true, alert.id, 'day tokens 80%'], 'the POST');
    const api = await adminApi('/api/admin/alerts');
    assertEq(api.alerts.map((a) => a.subject), ['erin', 'carol'], 'the alerts of this run, newest first');
    assertEq(api.last_24h, 2, 'alerts in the last 24 hours');

    await page.goto(`${ADMIN_URL}/alerts`);
    await page.getByRole('heading', { name: 'Alerts' }).waitFor();
    await settled(page);
    const rows = page.locator('tr[data-alert]');
    await waitFor('the alert rows', async () => (await rows.count()) === api.alerts.length);
    assertEq(await rows.evaluateAll((r) => r.map((x) => x.getAttribute('data-alert'))), api.alerts.map((a) => String(a.id)), 'rows');
    const row = page.locator(`tr[data-alert="${alert.id}"]`);
    const cells = {
      When: [utc(alert.ts)],
      Rule: ['daily tokens'],
      Kind: ['user limit'],
      Subject: ['erin'],
      Level: ['day tokens 80%', alert.period],
      Message: [alert.message],
      Delivery: ['delivered', '1 attempt'],
      Delivered: [utc(alert.delivered_at)],
    };
    for (const [label, texts] of Object.entries(cells)) {
      for (const text of texts) await row.locator(`td[data-label="${label}"]`).getByText(text, { exact: true }).waitFor();
    }
    await page.locator(`tr[data-alert="${api.alerts[1].id}"]`).getByText('day tokens 100%', { exact: true }).waitFor();
    // The menu's count: the alerts of the last 24 hours, with words for screen readers.
    const nav = page.getByRole('navigation', { name: 'Main' });
    await nav.getByRole('link', { name: 'Alerts (2 alerts in the last 24 hours)', exact: true }).waitFor();
    assertEq((await page.getByTestId('alert-count').locator('[aria-hidden="true"]').textContent()).trim(), '2', 'the count shown');
    assertEq((await page.getByTestId('alerts-24h').textContent()).trim(), '2 alerts in the last 24 hours', 'count on the page');
    await bothWidths(page, '12-alerts');
    await row.getByRole('link', { name: 'erin', exact: true }).click();
    await page.getByRole('heading', { name: /^erin/ }).waitFor();
    assertEq(new URL(page.url()).pathname, '/users/erin', 'the user’s page');
  });

  // --- plans ---
  await check('plans: the users page’s plan filter lists a pro user under pro, the others under the default plan', async () => {
    const call = await openaiChat('frank', { nWords: 4 });
    assertEq(call.status, 200, 'frank’s call on pro');
    await waitFor('frank on pro in the database', async () => (await adminApi('/api/admin/users?plan=pro')).users.map((u) => u.id).join() === 'frank');
    const free = (await adminApi('/api/admin/users?plan=free&sort=id&order=asc')).users.map((u) => u.id);
    assertEq(free, ['alice', 'bob', 'carol', 'dave', 'erin'], 'the users on the default plan (tokens without the claim)');

    await page.goto(`${ADMIN_URL}/users`);
    await page.getByRole('heading', { name: 'Users' }).waitFor();
    await settled(page);
    await page.locator('tr[data-user="frank"]').waitFor();
    assertEq(await page.locator('tr[data-user="frank"] td[data-label="Plan"]').textContent(), 'pro', 'frank’s plan column');
    assertEq(await page.locator('tr[data-user="alice"] td[data-label="Plan"]').textContent(), 'free', 'alice’s plan column');
    const filter = page.getByLabel('Plan', { exact: true });
    assertEq(
      await filter.locator('option').evaluateAll((o) => o.map((x) => [x.value, x.textContent])),
      [['', 'All plans'], ['free', 'free'], ['pro', 'pro']],
      'the plan filter’s choices',
    );
    await filter.selectOption('pro');
    await waitFor('only frank', async () =>
      JSON.stringify(await page.locator('tr[data-user]').evaluateAll((r) => r.map((x) => x.getAttribute('data-user')))) === '["frank"]',
    );
    assertEq(new URL(page.url()).searchParams.get('plan'), 'pro', 'the filter in the address');
    await bothWidths(page, '13-users-plan-filter');
    await filter.selectOption('free');
    await waitFor('the users on free', async () => {
      const ids = await page.locator('tr[data-user]').evaluateAll((r) => r.map((x) => x.getAttribute('data-user')));
      return JSON.stringify([...ids].sort()) === JSON.stringify(free);
    });
    // A reload keeps the filter.
    await page.reload();
    await page.locator('tr[data-user="alice"]').waitFor();
    assertEq(await page.getByLabel('Plan', { exact: true }).inputValue(), 'free', 'the filter after a reload');
    assertEq(await page.locator('tr[data-user="frank"]').count(), 0, 'frank is not on free');
  });

  await check('plans: a user’s page shows their plan and where each limit comes from; an override set in the UI shows as such', async () => {
    await page.goto(`${ADMIN_URL}/users?plan=pro`);
    await page.locator('tr[data-user="frank"]').getByRole('link', { name: /frank/ }).click();
    await page.getByRole('heading', { name: /^frank/ }).waitFor();
    await settled(page);
    assertEq((await page.getByTestId('user-plan').textContent()).trim(), 'plan pro', 'the plan beside the name');
    const limits = page.getByRole('table', { name: /^Limits in force for frank/ });
    const row = (key) => limits.locator(`tr[data-limit="${key}"]`);
    const shown = async (key) => [
      (await row(key).locator('td').nth(0).textContent()).trim(),
      (await row(key).locator('td').nth(1).textContent()).trim(),
      await row(key).getAttribute('data-source'),
    ];
    const api = (await adminApi('/api/admin/user/frank/usage?days=7')).user;
    assertEq([api.plan, api.limits.daily_tokens, api.limit_sources.daily_tokens], ['pro', 250000, 'plan'], 'frank in the admin API');
    assertEq(await shown('daily_tokens'), ['250,000', 'plan pro', 'plan'], 'tokens per day from the plan');
    assertEq(await shown('requests_per_minute'), ['1,200', 'plan pro', 'plan'], 'requests per minute from the plan');
    assertEq(await shown('monthly_tokens'), ['1,000,000', '[limits]', 'limits'], 'tokens per month from [limits]');
    await bothWidths(page, '14-user-plan');

    await page.getByRole('button', { name: 'Edit limits' }).click();
    const dialog = page.getByRole('dialog', { name: 'Limits for frank' });
    const perDay = dialog.getByLabel('Tokens per day', { exact: true });
    await perDay.waitFor();
    // Without an override, the plan's value applies: the editor says so.
    await waitFor('the plan’s value as the placeholder', async () => (await perDay.getAttribute('placeholder')) === '250,000');
    await dialog.getByText('From plan pro').first().waitFor();
    await perDay.fill('50000');
    await dialog.getByRole('button', { name: 'Save limits' }).click();
    await dialog.waitFor({ state: 'detached' });
    await waitFor('the override shown', async () => JSON.stringify(await shown('daily_tokens')) === JSON.stringify(['50,000', 'override', 'override']));
    assertEq(await shown('requests_per_minute'), ['1,200', 'plan pro', 'plan'], 'the plan’s other limits stay');
    const after = (await adminApi('/api/admin/users?search=frank')).users[0];
    assertEq([after.overrides.daily_tokens, after.limits.daily_tokens, after.limit_sources.daily_tokens], [50000, 50000, 'override'], 'frank’s override in the database');

    // Cleared, the plan's limit is back.
    await page.getByRole('button', { name: 'Edit limits' }).click();
    await dialog.getByRole('button', { name: 'Clear all' }).click();
    await dialog.getByRole('button', { name: 'Save limits' }).click();
    await dialog.waitFor({ state: 'detached' });
    await waitFor('the plan’s limit again', async () => JSON.stringify(await shown('daily_tokens')) === JSON.stringify(['250,000', 'plan pro', 'plan']));
  });

  await check('plans: the plans page lists both plans of gateway.toml', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Plans' }).click();
    await page.getByRole('heading', { name: 'Plans', level: 1 }).waitFor();
    await settled(page);
    const api = await adminApi('/api/admin/plans');
    assertEq([api.plan_claim, api.default_plan, api.plans.map((p) => p.name)], ['plan', 'free', ['free', 'pro']], 'the plans in the admin API');
    assertEq((await page.getByTestId('plan-claim').textContent()).trim(), 'plan', 'the claim');
    assertEq((await page.getByTestId('default-plan').textContent()).trim(), 'free', 'the default plan');
    const free = page.locator('#plan-free');
    const pro = page.locator('#plan-pro');
    await free.getByRole('heading', { name: 'free default' }).waitFor();
    await pro.getByRole('heading', { name: 'pro', exact: true }).waitFor();
    const sources = (card) =>
      card.locator('tr[data-limit]').evaluateAll((r) => Object.fromEntries(r.map((x) => [x.getAttribute('data-limit'), x.getAttribute('data-source')])));
    assertEq(
      await sources(free),
      { daily_tokens: 'limits', monthly_tokens: 'plan', daily_cost_nano_usd: 'limits', monthly_cost_nano_usd: 'limits', requests_per_minute: 'limits', max_concurrent: 'limits' },
      'free’s sources',
    );
    assertEq(
      await sources(pro),
      { daily_tokens: 'plan', monthly_tokens: 'limits', daily_cost_nano_usd: 'limits', monthly_cost_nano_usd: 'limits', requests_per_minute: 'plan', max_concurrent: 'limits' },
      'pro’s sources',
    );
    assertEq((await free.locator('tr[data-limit="monthly_tokens"] td').first().textContent()).trim(), '500,000', 'free’s monthly tokens');
    assertEq(await page.getByTestId('plan-models-free').locator('li').allTextContents(), ['gpt-4o-mini*', 'gemini-2.5-flash*'], 'free’s models');
    await page.getByTestId('plan-models-pro').getByText('every model not denied').waitFor();
    assertEq(await page.getByTestId('plan-models-pro').locator('li').allTextContents(), ['o1-pro*'], 'pro’s denied models');
    const terms = (testId) =>
      page.getByTestId(testId).evaluate((dl) => Object.fromEntries([...dl.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling.textContent])));
    const proOutput = api.plans[1];
    assertEq(
      await terms('plan-output-pro'),
      {
        'Ceiling per call': '4,096 tokens',
        'Asking for more': 'lowered to the ceiling',
        'Reserved for a call without a cap': `${intFmt.format(proOutput.default_max_output_tokens)} tokens`,
      },
      'pro’s output ceiling',
    );
    assertEq((await terms('plan-output-free'))['Ceiling per call'], 'no ceiling', 'free’s output ceiling');
    await bothWidths(page, '15-plans');
    await pro.getByRole('link', { name: 'Users on pro' }).click();
    await page.locator('tr[data-user="frank"]').waitFor();
    assertEq(await page.locator('tr[data-user]').count(), 1, 'only frank on pro');
  });

  await check('phone: the menu opens, navigates and closes', async () => {
    await page.setViewportSize(PHONE);
    await page.goto(`${ADMIN_URL}/`);
    await page.getByTestId('calls-today').waitFor();
    const nav = page.getByRole('navigation', { name: 'Main' });
    await page.getByRole('button', { name: 'Open the menu' }).click();
    await nav.getByRole('link', { name: 'Audit log' }).click();
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    assert(!(await nav.getByRole('link', { name: 'Users' }).isVisible()), 'the menu closed after navigating');
    await noHorizontalScroll(page, 'audit with the menu');
    await page.setViewportSize(DESKTOP);
  });

  await check('a missing page says so', async () => {
    await page.goto(`${ADMIN_URL}/no/such/page`);
    await page.getByRole('heading', { name: 'Page not found' }).waitFor();
    await page.goto(`${ADMIN_URL}/users/nobody-here`);
    await page.getByText('No such user').waitFor();
    await bothWidths(page, '09-unknown-user');
  });

  // --- session end ---
  await check('an expired session goes to sign-in with a message, then back', async () => {
    await page.goto(`${ADMIN_URL}/audit`);
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    await context.clearCookies(); // as if the session had expired on the server
    await page.getByRole('button', { name: 'Refresh now' }).click();
    await page.getByTestId('expired').waitFor();
    assertEq(new URL(page.url()).searchParams.get('next'), '/audit', 'the page to come back to');
    await bothWidths(page, '10-session-expired');
    await page.getByLabel('Account name').fill(ADMIN);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Audit log' }).waitFor();
    assertEq(new URL(page.url()).pathname, '/audit', 'back where the operator was');
  });

  await check('sign out', async () => {
    await page.getByRole('button', { name: /Sign out/ }).click();
    await page.getByText('You are signed out.').waitFor();
    await page.goto(`${ADMIN_URL}/`);
    await page.getByRole('heading', { name: 'Sign in to Tollgate' }).waitFor();
    const res = await page.request.get(`${ADMIN_URL}/api/admin/me`);
    assertEq(res.status(), 401, 'the session is gone');
  });

  await check('no request left 127.0.0.1, no script error', async () => {
    assertEq(offsite, [], 'requests to other origins');
    assertEq(consoleErrors, [], 'console errors');
  });

  await check('hashed assets are cached, pages are not; the API is not the app', async () => {
    const index = await fetch(`${ADMIN_URL}/users/alice`);
    assertEq(index.status, 200, 'a page path serves the app');
    const html = await index.text();
    assert(html.includes('<div id="root">'), 'index.html');
    assert(/no-cache|no-store/.test(index.headers.get('cache-control') ?? ''), 'index.html is revalidated');
    const asset = /\/assets\/[^"]+\.js/.exec(html)?.[0];
    assert(asset, 'a hashed script');
    const a = await fetch(`${ADMIN_URL}${asset}`);
    assertEq(a.status, 200, 'asset');
    assert(/immutable|max-age=\d{5,}/.test(a.headers.get('cache-control') ?? ''), `asset cache-control: ${a.headers.get('cache-control')}`);
    assertEq((await fetch(`${ADMIN_URL}/api/admin/nope`)).status, 404, 'unknown API path');
  });
}

/** A dialog open on the page: screenshots at both widths, no sideways scroll on the phone. */
async function bothWidthsDialog(page, name) {
  await shoot(page, `${name}-desktop`, false);
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(250);
  await noHorizontalScroll(page, name);
  await shoot(page, `${name}-phone`, false);
  await page.setViewportSize(DESKTOP);
  await page.waitForTimeout(150);
}

let code = 0;
try {
  await main();
} catch (e) {
  failed++;
  failures.push('setup');
  log(`FAIL setup: ${e?.stack ?? e}`);
} finally {
  await cleanup();
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (failures.length) console.log(`failed: ${failures.join('; ')}`);
  console.log(`e2e: ${passed} passed, ${failed} failed (${secs}s)`);
  console.log(`${passed} passed, ${failed} failed`);
  code = failed > 0 || passed === 0 ? 1 : 0;
}
process.exit(code);
