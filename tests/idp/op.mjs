// A real OpenID provider for the provider tests (panva's oidc-provider), on a free loopback
// port: discovery, a JWKS holding the test RSA key (so tests can also sign JWTs the
// provider's key set vouches for), client-credentials access tokens (opaque), RFC 7662
// introspection and RFC 7009 revocation. Prints `issuer <url>` once it listens; stops when
// its standard input closes (so a test that dies never leaves it running).
//
//   node op.mjs path/to/rsa_private.pem
import { createServer } from 'node:http';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const jwk = createPrivateKey(readFileSync(process.argv[2])).export({ format: 'jwk' });
Object.assign(jwk, { kid: 'rsa-1', alg: 'RS256', use: 'sig' });

const server = createServer();
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${server.address().port}`;
const provider = new Provider(issuer, {
  clients: [
    // wsgate itself: introspects (client_secret_basic).
    {
      client_id: 'wsgate', client_secret: 'wsgate-introspection-secret',
      grant_types: ['client_credentials'], redirect_uris: [], response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    // The application whose tokens reach wsgate.
    {
      client_id: 'chat-app', client_secret: 'chat-app-secret',
      grant_types: ['client_credentials'], redirect_uris: [], response_types: [],
      scope: 'chat',
    },
  ],
  features: {
    clientCredentials: { enabled: true },
    introspection: { enabled: true, allowedPolicy: async () => true },
    revocation: { enabled: true },
    devInteractions: { enabled: false },
  },
  scopes: ['chat'],
  jwks: { keys: [jwk] },
  ttl: { ClientCredentials: 600 },
});
server.on('request', provider.callback());
console.log(`issuer ${issuer}`);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
