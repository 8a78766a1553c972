// Local OpenID Connect provider for development and tests: it issues JWT access tokens for
// the streamshop API to customers (authorization code + PKCE, client `storefront`) and to
// operators (client credentials, client `operator`), and it can rotate its signing keys.
// Usage: OIDC_KEYS=keys.json OIDC_OPERATOR_SECRET=... node provider.mjs [rotate]
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
// The in-memory adapter is created once and handed to every Provider instance, so sessions,
// grants and unfinished logins survive a key reload (passing it also silences the warning
// oidc-provider prints when it has to pick the in-memory adapter itself).
import { createMemoryAdapter } from 'oidc-provider/lib/adapters/memory_adapter.js';

const env = process.env;
const fail = (message) => { console.error(`provider.mjs: ${message}`); process.exit(1); };
const KEYS = env.OIDC_KEYS || fail('OIDC_KEYS (path of the signing keys JSON file) is required');
const PEMS = `${KEYS}.pem.json`;

// A new key pair per algorithm, as a private JWK with a random kid so that keys generated on
// different machines or rotations never collide.
function newKey(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const kid = crypto.randomBytes(8).toString('base64url');
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

// Secrets are written to a temporary file and renamed, so a reload never reads half a file.
function writeSecret(path, value) {
  fs.writeFileSync(`${path}.tmp`, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(`${path}.tmp`, path);
}

// Reads the key file (creating it on first use) and rewrites the PEM copy that Rust tests
// use to sign their own tokens with the provider's keys.
function loadKeys() {
  if (!fs.existsSync(KEYS)) writeSecret(KEYS, { keys: [newKey('RS256'), newKey('ES256')] });
  const jwks = JSON.parse(fs.readFileSync(KEYS, 'utf8'));
  if (!jwks.keys?.some((k) => k.alg === 'RS256')) throw new Error(`${KEYS} has no RS256 key`);
  writeSecret(PEMS, Object.fromEntries(jwks.keys.map((k) => [k.kid, {
    alg: k.alg,
    pem: crypto.createPrivateKey({ key: k, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }),
  }])));
  return jwks;
}

// `rotate` puts new keys in front (the first key of each alg signs) and keeps the old ones
// published, so tokens signed before the rotation still verify until they expire.
if (process.argv[2] === 'rotate') {
  const old = fs.existsSync(KEYS) ? JSON.parse(fs.readFileSync(KEYS, 'utf8')).keys : [];
  const fresh = [newKey('RS256'), newKey('ES256')];
  writeSecret(KEYS, { keys: [...fresh, ...old] });
  loadKeys();
  console.log(fresh[0].kid);
  process.exit(0);
} else if (process.argv[2]) fail(`unknown subcommand ${process.argv[2]} (only "rotate")`);

const PORT = Number(env.OIDC_PORT || 8090);
const HOST = env.OIDC_HOST || '127.0.0.1';
const ISSUER = env.OIDC_ISSUER || `http://127.0.0.1:${PORT}`;
const AUDIENCE = env.OIDC_AUDIENCE || 'streamshop';
// oidc-provider only accepts absolute URIs as resource indicators, so a bare audience such as
// `streamshop` is requested as `urn:streamshop`; the token's `aud` is still the bare name.
const RESOURCE = URL.canParse(AUDIENCE) ? AUDIENCE : `urn:${AUDIENCE}`;
const SECRET = env.OIDC_OPERATOR_SECRET || fail('OIDC_OPERATOR_SECRET is required');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// oidc-provider 9 warns at import time that Node 20 is not a supported runtime; that one
// notice is dropped (it is imported dynamically, after this filter) and everything else passes.
const consoleWarn = console.warn;
console.warn = (msg, ...rest) => String(msg).includes('Unsupported runtime') || consoleWarn(msg, ...rest);
const { default: Provider, errors } = await import('oidc-provider');
console.warn = consoleWarn;

const adapter = createMemoryAdapter();
// Each customer's address, as given at sign-in; one who gave none is `<id>@customers.example`
// (a domain reserved for examples), so every local customer gets their order emails.
const emails = new Map();
const EMAIL = /^[^\s@<>"(),;:\[\]\\]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;
const emailOf = (id) => ({ email: emails.get(id) ?? `${id}@customers.example`, email_verified: true });
// Cookie keys are shared by every Provider instance so that a key reload keeps logins going.
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

function makeProvider(jwks) {
  const provider = new Provider(ISSUER, {
    adapter,
    jwks,
    cookies: { keys: cookieKeys },
    clients: [
      {
        client_id: 'storefront',
        token_endpoint_auth_method: 'none', // public, so PKCE is required
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
      },
      {
        client_id: 'operator',
        client_secret: SECRET,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
      },
    ],
    findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id, ...emailOf(id) }) }),
    // A customer's access token carries their address (OpenID's `email` claim), which the
    // gateway passes on with their orders; the operator's has none.
    extraTokenClaims: (ctx, token) => (token.accountId ? emailOf(token.accountId) : undefined),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Every token is for the API, so a request without `resource` still gets a JWT for it.
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo(ctx, indicator, client) {
          if (indicator !== RESOURCE) throw new errors.InvalidTarget();
          // The gateway treats `admin` as operator rights, so only the operator may hold it.
          const scope = client?.clientId === 'operator' ? 'openid orders admin' : 'openid orders';
          return {
            scope, audience: AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 3600, jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // Explicit lifetimes keep oidc-provider from printing a notice for each default it uses.
    ttl: {
      AccessToken: 3600, ClientCredentials: 3600, IdToken: 3600, Interaction: 600, Session: 86400, Grant: 86400,
    },
    renderError(ctx, out) {
      ctx.type = 'text/plain';
      ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
    },
  });
  provider.proxy = false;
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server error:', err));
  return { provider, handle: provider.callback() };
}

let current = makeProvider(loadKeys());

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
}

// The customer login: a form asking for the customer id, and one POST that both logs the
// customer in and grants consent, so the flow goes straight back to the client with a code.
async function interaction(req, res, uid, login) {
  const { provider } = current;
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction does not match its cookie\n');
  if (!login && req.method === 'GET') {
    return send(res, 200, 'text/html; charset=utf-8', `<!doctype html><title>Sign in</title>
<form method=post action=/interaction/${uid}/login>
<label>Customer id (UUID) <input name=customer required autofocus></label>
<label>Email (optional) <input name=email type=email></label> <button>Sign in</button>
</form>\n`);
  }
  if (!login || req.method !== 'POST') return send(res, 405, 'text/plain', 'method not allowed\n');
  let body = '';
  for await (const chunk of req) if ((body += chunk).length > 4096) return send(res, 413, 'text/plain', 'too large\n');
  const form = new URLSearchParams(body);
  const customer = form.get('customer')?.trim().toLowerCase() ?? '';
  if (!UUID.test(customer)) return send(res, 400, 'text/plain', 'customer must be a UUID\n');
  const email = form.get('email')?.trim() ?? '';
  if (email && (email.length > 254 || !EMAIL.test(email))) return send(res, 400, 'text/plain', 'email is not an address\n');
  if (email) emails.set(customer, email);
  const grant = new provider.Grant({ accountId: customer, clientId: details.params.client_id });
  const requested = String(details.params.scope ?? '').split(' ');
  grant.addOIDCScope(['openid', ...requested.filter((s) => s === 'offline_access')]);
  grant.addResourceScope(RESOURCE, 'openid orders');
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { login: { accountId: customer }, consent: { grantId } }, {
    mergeWithLastSubmission: false,
  });
}

const server = http.createServer((req, res) => {
  const route = /^\/interaction\/([\w-]+)(\/login)?$/.exec(new URL(req.url, ISSUER).pathname);
  if (!route) return current.handle(req, res);
  return interaction(req, res, route[1], !!route[2]).catch((err) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) console.error('interaction failed:', err);
    if (!res.headersSent) send(res, status, 'text/plain', `${err.error ?? 'error'}: ${err.error_description ?? err.message}\n`);
  });
});

// A reload builds a new Provider with the keys now in the file and swaps it in behind the
// same listening socket; a broken key file leaves the running provider untouched.
process.on('SIGHUP', () => {
  try {
    const jwks = loadKeys();
    current = makeProvider(jwks);
    console.log(`keys reloaded: signing kid ${jwks.keys.find((k) => k.alg === 'RS256').kid}`);
  } catch (err) {
    console.error('keys not reloaded:', err.message);
  }
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
}

server.listen(PORT, HOST, () => console.log(`oidc-provider listening on ${ISSUER}`));
