// Tokens minted by an independent JOSE implementation (npm `jose`), for wsgate's interop
// test: one key per algorithm wsgate accepts, published with `kid` (and, for RS256 and ES256,
// a second key without one), a valid token for each, and a tampered copy of each (payload
// changed, signature kept). Prints {"keys": [...], "tokens": [{name, token, valid}]}.
import * as jose from 'jose';

const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'];
const keys = [];
const tokens = [];

async function mint(alg, kid) {
  const { publicKey, privateKey } = await jose.generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
  const jwk = await jose.exportJWK(publicKey);
  Object.assign(jwk, { alg, use: 'sig' }, kid ? { kid } : {});
  keys.push(jwk);
  const name = `jose-${alg}${kid ? '' : '-no-kid'}`;
  const header = kid ? { alg, kid } : { alg };
  const token = await new jose.SignJWT({ sub: name, channels: ['interop'] })
    .setProtectedHeader(header).setIssuedAt().setExpirationTime('10m').sign(privateKey);
  tokens.push({ name, token, valid: true });
  const [h, , s] = token.split('.');
  const forged = Buffer.from(JSON.stringify({ sub: 'admin', exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url');
  tokens.push({ name: `${name}-tampered`, token: `${h}.${forged}.${s}`, valid: false });
}

for (const alg of ALGS) await mint(alg, `jose-${alg}`);
await mint('RS256', null);
await mint('ES256', null);
console.log(JSON.stringify({ keys, tokens }));
