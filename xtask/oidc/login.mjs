// Command-line client of the local OpenID Connect provider (provider.mjs): it obtains an access
// token for the streamshop API and prints only that token, so scripts can use $(node login.mjs ...).
//   node login.mjs --issuer URL --customer <uuid> [--email ADDRESS] [--audience streamshop]   (authorization code + PKCE as `storefront`)
//   node login.mjs --issuer URL --admin --secret-file F [--audience streamshop]  (client credentials as `operator`)
// The operator's secret is read from a file, never taken on the command line, where every user
// of the machine could read it (ps, /proc/<pid>/cmdline).
import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const CALLBACK = 'http://127.0.0.1/callback';

class Failure extends Error {}
const check = (ok, message) => { if (!ok) throw new Failure(message); };

// Reads a JSON reply and turns an OAuth error reply into a readable failure.
async function json(res, what) {
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch { throw new Failure(`${what}: HTTP ${res.status}: ${text.slice(0, 300)}`); }
  check(res.ok, `${what}: HTTP ${res.status}: ${body.error ?? ''} ${body.error_description ?? ''}`.trim());
  return body;
}

async function tokenRequest(meta, params, headers = {}) {
  const res = await fetch(meta.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params),
  });
  const body = await json(res, 'token request');
  check(typeof body.access_token === 'string', 'token response has no access_token');
  return body.access_token;
}

// The authorization code flow a browser would perform, done by hand: redirects are followed
// one by one (never into the callback, which nobody serves) and the issuer's cookies are kept
// in a small jar, because the login page and the resumed authorization depend on them.
async function customerToken(meta, customer, email, resource) {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const state = crypto.randomBytes(16).toString('base64url');
  const url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: 'storefront',
    response_type: 'code',
    redirect_uri: CALLBACK,
    scope: 'openid',
    resource,
    code_challenge: crypto.createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    state,
  });
  const jar = new Map();
  let next = { url: url.href, method: 'GET' };
  let callback;
  for (let hop = 0; !callback; hop += 1) {
    check(hop < 20, 'too many redirects');
    const res = await fetch(next.url, {
      method: next.method,
      redirect: 'manual',
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '), ...next.headers },
      body: next.body,
    });
    for (const cookie of res.headers.getSetCookie()) {
      const [, name, value] = /^([^=]+)=([^;]*)/.exec(cookie) ?? [];
      if (name && value && !/expires=Thu, 01 Jan 1970/i.test(cookie)) jar.set(name, value);
      else if (name) jar.delete(name);
    }
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      const target = new URL(location, next.url).href;
      if (target.startsWith(CALLBACK)) callback = new URL(target);
      else next = { url: target, method: 'GET' };
      continue;
    }
    const page = await res.text();
    check(res.status === 200, `${next.method} ${next.url}: HTTP ${res.status}: ${page.trim().slice(0, 300)}`);
    // A 200 answer on the way can only be the login form; it is submitted with the customer id.
    const action = /<form[^>]*\baction=["']?([^"'\s>]+)/i.exec(page)?.[1];
    check(action && next.method === 'GET', `unexpected page at ${next.url}: ${page.slice(0, 300)}`);
    next = {
      url: new URL(action, next.url).href,
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ customer, ...(email ? { email } : {}) }).toString(),
    };
  }
  const answer = callback.searchParams;
  check(!answer.has('error'), `authorization failed: ${answer.get('error')} ${answer.get('error_description') ?? ''}`);
  check(answer.get('state') === state, 'authorization response state does not match the request');
  check(!answer.has('iss') || answer.get('iss') === meta.issuer, `authorization response from another issuer: ${answer.get('iss')}`);
  check(answer.get('code'), 'authorization response has no code');
  return tokenRequest(meta, {
    grant_type: 'authorization_code',
    code: answer.get('code'),
    redirect_uri: CALLBACK,
    client_id: 'storefront',
    code_verifier: verifier,
    resource,
  });
}

async function main() {
  const { values: o } = parseArgs({
    options: {
      issuer: { type: 'string' },
      customer: { type: 'string' },
      email: { type: 'string' },
      admin: { type: 'boolean', default: false },
      'secret-file': { type: 'string' },
      audience: { type: 'string', default: 'streamshop' },
    },
  });
  check(o.issuer, 'usage: login.mjs --issuer URL (--customer UUID | --admin --secret-file F) [--audience A]');
  check(o.admin !== !!o.customer, 'give exactly one of --customer UUID or --admin');
  check(!o.admin || o['secret-file'], '--admin needs --secret-file');
  // Same rule as provider.mjs: a bare audience name is requested as the resource `urn:<name>`.
  const resource = URL.canParse(o.audience) ? o.audience : `urn:${o.audience}`;
  const discovery = `${o.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
  const meta = await json(await fetch(discovery), `discovery ${discovery}`);
  if (o.customer) return customerToken(meta, o.customer, o.email, resource);
  // client_secret_basic: id and secret are form-encoded before base64 (RFC 6749, section 2.3.1).
  const secret = readFileSync(o['secret-file'], 'utf8').trim();
  const basic = Buffer.from(`operator:${encodeURIComponent(secret)}`).toString('base64');
  return tokenRequest(meta, { grant_type: 'client_credentials', scope: 'admin', resource }, {
    authorization: `Basic ${basic}`,
  });
}

try {
  console.log(await main());
} catch (err) {
  console.error(`login.mjs: ${err.message}${err.cause ? `: ${err.cause.message}` : ''}`);
  process.exit(1);
}
