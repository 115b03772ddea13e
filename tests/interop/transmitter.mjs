// A Shared Signals transmitter for wsgate's SSF tests, signing with an independent JOSE
// implementation (npm `jose`): reads {"sets": [{"payload", "header"?, "key"?}]} on standard
// input and prints {"jwks": {...}, "sets": ["<compact JWS>", ...]}. Each SET is signed RS256
// with the published key (`kid` "t-1", `typ` "secevent+jwt") unless `header` overrides a
// member or `key` is "unpublished" (a key of the same kid that the JWKS does not hold).
import * as jose from 'jose';

const input = JSON.parse(await new Promise((ok) => {
  let text = '';
  process.stdin.on('data', (d) => { text += d; });
  process.stdin.on('end', () => ok(text));
}));
const published = await jose.generateKeyPair('RS256', { extractable: true });
const unpublished = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = await jose.exportJWK(published.publicKey);
Object.assign(jwk, { kid: 't-1', alg: 'RS256', use: 'sig' });

const sets = [];
for (const { payload, header = {}, key } of input.sets) {
  const signer = key === 'unpublished' ? unpublished.privateKey : published.privateKey;
  const protectedHeader = { alg: 'RS256', kid: 't-1', typ: 'secevent+jwt', ...header };
  sets.push(await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
    // A `crit` header is signed as given (jose must be told the names are understood).
    .setProtectedHeader(protectedHeader)
    .sign(signer, header.crit ? { crit: Object.fromEntries(header.crit.map((c) => [c, true])) } : undefined));
}
console.log(JSON.stringify({ jwks: { keys: [jwk] }, sets }));
