// A real OpenID Connect provider for the end-to-end tests: the certified `oidc-provider`
// package, configured the way an organisation's identity provider would be, on 127.0.0.1:0
// over HTTPS.
//
// Environment:
//   OIDC_TLS_CERT, OIDC_TLS_KEY  PEM files of the serving certificate (SAN 127.0.0.1) and key.
//
// Once listening it prints one JSON line on stdout, `{"issuer": "https://127.0.0.1:<port>",
// "port": <port>}`; everything else goes to stderr. It exits when its stdin closes (the test
// process that started it went away) or on SIGTERM/SIGINT.
//
// What it serves:
//   - the provider itself (discovery, /auth, /token, /jwks, /me, ...), authorization code flow
//     with PKCE required, ID tokens signed RS256 with keys generated at start;
//   - its own login and consent interactions (no devInteractions): GET /interaction/<uid> shows
//     a login form that POSTs `login` and `password` to /interaction/<uid>/login; consent is
//     granted without asking, as identity providers do for first-party clients;
//   - test-only routes: GET /test/jwks-count (how many times the JWKS was fetched),
//     POST /test/rotate-keys (sign with a new key from now on, keep publishing the old ones),
//     POST /test/retire-old-keys (publish only the key it signs with),
//     POST /test/disable-account {"email"} (offboarding: the account is gone from the directory,
//     so logins and refreshes of its grants are refused), and
//     POST /test/next-id-token {"id_token"} (the next successful answer of the token endpoint
//     carries this ID token instead of its own, once: a stand-in for a token endpoint that hands
//     out a token of another client or another issuer).
//
// Key rotation: oidc-provider reads its keys once, in its constructor, and has no API to change
// them. A rotation therefore builds a new Provider with the new key first (the one it signs
// with) and the old keys after it (still published, so tokens already issued keep verifying),
// and this server sends requests to the new one from then on. Both instances use the package's
// in-memory adapter, whose storage is shared by the whole process, and the same cookie keys, so
// sessions and grants carry over: to a client it is one provider whose JWKS gained a key.

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider, { errors } from 'oidc-provider';

const { OIDC_TLS_CERT, OIDC_TLS_KEY } = process.env;
if (!OIDC_TLS_CERT || !OIDC_TLS_KEY) {
  console.error('error: OIDC_TLS_CERT and OIDC_TLS_KEY must name PEM files');
  process.exit(2);
}

// Registered clients. Both are confidential native clients (a CLI's login, as `infra login` does
// it): their redirect URI is a loopback address the test never listens on; it stops at the
// redirect and reads the code. Being native, they may use that loopback URI with any port
// (RFC 8252 section 7.3: oidc-provider's `redirectUriAllowed` ignores the port of `http` loopback
// redirect URIs of `native` clients), as a CLI's local listener on a port of its choosing does.
const REDIRECT_URIS = ['http://127.0.0.1/callback', 'http://localhost/callback'];
const CLIENTS = [
  {
    client_id: 'infra-test',
    client_secret: 'infra-test-secret',
    application_type: 'native',
    redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    // Another application of the same organisation: its ID tokens carry its own audience.
    client_id: 'other-app',
    client_secret: 'other-app-secret',
    application_type: 'native',
    redirect_uris: REDIRECT_URIS,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

// The directory: login name → account. The subject is a stable id, as real providers use.
const ACCOUNTS = new Map(
  [
    {
      sub: 'u-suzie',
      email: 'suzie@example.com',
      password: 'suzie-password',
      name: 'Suzie Q',
      email_verified: true,
      groups: ['Engineering', 'Design'],
    },
    {
      sub: 'u-carl',
      email: 'carl@example.com',
      password: 'carl-password',
      name: 'Carl Example',
      email_verified: true,
      groups: ['Engineering'],
    },
    {
      sub: 'u-unverified',
      email: 'unverified@example.com',
      password: 'unverified-password',
      name: 'Not Yet Verified',
      email_verified: false,
      groups: ['Engineering'],
    },
  ].map((account) => [account.email, account]),
);
const BY_SUB = new Map([...ACCOUNTS.values()].map((account) => [account.sub, account]));

function findAccount(_ctx, sub) {
  const account = BY_SUB.get(sub);
  // A disabled account is unknown: oidc-provider then refuses the refresh of its grants.
  if (!account || account.disabled) return undefined;
  return {
    accountId: sub,
    // The provider keeps only the claims of the granted scopes (see `claims` below).
    async claims() {
      return {
        sub,
        email: account.email,
        email_verified: account.email_verified,
        name: account.name,
        groups: account.groups,
      };
    },
  };
}

function newSigningKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: `rsa-${randomUUID()}`,
    alg: 'RS256',
    use: 'sig',
  };
}

const cookieKeys = [randomBytes(32).toString('base64url')];
let signingKeys = [newSigningKey()];
let jwksRequests = 0;
// Set by POST /test/next-id-token, used up by the next successful token endpoint answer.
let nextIdToken;

function newProvider(issuer, keys) {
  const provider = new Provider(issuer, {
    clients: CLIENTS,
    findAccount,
    jwks: { keys },
    cookies: { keys: cookieKeys },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    // Put the claims of every granted scope in the ID token itself, not only at the userinfo
    // endpoint: Kubernetes (and infra-proxy) read the user and groups from the ID token.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError(ctx, out) {
      ctx.type = 'text/plain; charset=utf-8';
      ctx.body = `${out.error}: ${out.error_description ?? ''}\n`;
    },
  });
  provider.on('server_error', (_ctx, error) => console.error('server_error:', error));
  // Koa middleware (oidc-provider is a Koa application): swaps in the ID token set by
  // POST /test/next-id-token, once.
  provider.use(async (ctx, next) => {
    await next();
    if (
      nextIdToken
      && ctx.path === '/token'
      && ctx.status === 200
      && ctx.body
      && typeof ctx.body === 'object'
      && ctx.body.id_token
    ) {
      console.error('oidc: answering the token request with the ID token set by the test');
      ctx.body = { ...ctx.body, id_token: nextIdToken };
      nextIdToken = undefined;
    }
  });
  return { provider, callback: provider.callback() };
}

let current;

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

function json(res, status, value) {
  send(res, status, 'application/json', `${JSON.stringify(value)}\n`);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, message) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in to ${escapeHtml(clientId)}</h1>
${message ? `<p class="error">${escapeHtml(message)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<input type="text" name="login" placeholder="Email" autofocus required>
<input type="password" name="password" placeholder="Password" required>
<button type="submit">Sign in</button>
</form>
</body>
</html>
`;
}

async function readBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 64 * 1024) throw new Error('body too large');
  }
  return body;
}

async function readJson(req) {
  return JSON.parse((await readBody(req)) || '{}');
}

async function readForm(req) {
  return new URLSearchParams(await readBody(req));
}

// The interaction routes, as oidc-provider's documentation and example describe them.
async function interaction(req, res, path) {
  const { provider } = current;
  const match = /^\/interaction\/([^/]+)(\/login)?$/.exec(path);
  if (!match) return send(res, 404, 'text/plain', 'not found\n');
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;

  if (req.method === 'GET' && !match[2]) {
    if (prompt.name === 'login') {
      return send(res, 200, 'text/html; charset=utf-8', loginPage(uid, params.client_id));
    }
    if (prompt.name === 'consent') {
      // A first-party client: grant what it asked for without a consent screen.
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) {
        grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      }
      if (prompt.details.missingOIDCClaims) {
        grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      }
      if (prompt.details.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      const grantId = await grant.save();
      const consent = details.grantId ? {} : { grantId };
      return provider.interactionFinished(req, res, { consent }, { mergeWithLastSubmission: true });
    }
    return send(res, 400, 'text/plain', `unsupported prompt ${prompt.name}\n`);
  }

  if (req.method === 'POST' && match[2]) {
    if (prompt.name !== 'login') return send(res, 400, 'text/plain', 'not a login prompt\n');
    const form = await readForm(req);
    const account = ACCOUNTS.get(form.get('login') ?? '');
    if (!account || account.disabled || account.password !== form.get('password')) {
      return send(
        res,
        401,
        'text/html; charset=utf-8',
        loginPage(uid, params.client_id, 'Invalid email or password.'),
      );
    }
    return provider.interactionFinished(
      req,
      res,
      { login: { accountId: account.sub } },
      { mergeWithLastSubmission: false },
    );
  }
  return send(res, 405, 'text/plain', 'method not allowed\n');
}

async function handle(req, res) {
  const path = new URL(req.url, 'https://127.0.0.1').pathname;
  if (path === '/test/jwks-count' && req.method === 'GET') {
    return json(res, 200, { count: jwksRequests });
  }
  if (path === '/test/rotate-keys' && req.method === 'POST') {
    const key = newSigningKey();
    // The new key first: oidc-provider signs with the first key of the algorithm.
    signingKeys = [key, ...signingKeys];
    current = newProvider(current.provider.issuer, signingKeys);
    console.error(`oidc: rotated keys, now signing with ${key.kid}`);
    return json(res, 200, { kid: key.kid });
  }
  if (path === '/test/retire-old-keys' && req.method === 'POST') {
    // Stop publishing every key but the one it signs with, as after a key compromise.
    signingKeys = [signingKeys[0]];
    current = newProvider(current.provider.issuer, signingKeys);
    console.error(`oidc: retired old keys, now publishing only ${signingKeys[0].kid}`);
    return json(res, 200, { kid: signingKeys[0].kid });
  }
  if (path === '/test/disable-account' && req.method === 'POST') {
    const { email } = await readJson(req);
    const account = ACCOUNTS.get(email ?? '');
    if (!account) return json(res, 404, { error: `no account ${email}` });
    account.disabled = true;
    console.error(`oidc: disabled the account of ${email}`);
    return json(res, 200, { email, disabled: true });
  }
  if (path === '/test/next-id-token' && req.method === 'POST') {
    const { id_token: idToken } = await readJson(req);
    if (typeof idToken !== 'string') return json(res, 400, { error: 'id_token must be a string' });
    nextIdToken = idToken;
    return json(res, 200, { armed: true });
  }
  if (path === '/jwks') jwksRequests += 1;
  if (path.startsWith('/interaction/')) {
    try {
      return await interaction(req, res, path);
    } catch (error) {
      if (error instanceof errors.SessionNotFound) {
        return send(res, 400, 'text/plain', `${error.message}: ${error.error_description}\n`);
      }
      throw error;
    }
  }
  return current.callback(req, res);
}

const server = createServer(
  { cert: readFileSync(OIDC_TLS_CERT), key: readFileSync(OIDC_TLS_KEY) },
  (req, res) => {
    handle(req, res).catch((error) => {
      console.error('oidc: request failed:', error);
      if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n');
      else res.destroy();
    });
  },
);

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `https://127.0.0.1:${port}`;
  current = newProvider(issuer, signingKeys);
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

function stop() {
  server.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The test process holds our stdin: when it goes away, so do we.
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
