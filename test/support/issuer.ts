import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

/**
 * A real identity provider for tests: key pairs generated at test time and a JWKS endpoint
 * served over HTTP on loopback, counting its fetches.
 */
export class TestIssuer {
  readonly issuer: string;
  readonly alg: string;
  readonly keys: { kid: string; privateKey: CryptoKey; publicJwk: JWK }[] = [];
  jwksFetches = 0;
  /** When set, the JWKS endpoint answers this instead of the keys (an identity provider in trouble); `chunked` sends it without Content-Length. */
  jwksFailure: { status: number; body: string; chunked?: boolean } | undefined;
  #server: Server | undefined;
  #url = '';
  #held: { arrived: () => void; released: Promise<void> } | undefined;

  private constructor(issuer: string, alg: string) {
    this.issuer = issuer;
    this.alg = alg;
  }

  static async create(issuer = 'https://idp.test.example', alg = 'ES256'): Promise<TestIssuer> {
    const testIssuer = new TestIssuer(issuer, alg);
    await testIssuer.addKey();
    return testIssuer;
  }

  async addKey(kid = `key-${this.keys.length + 1}`): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair(this.alg, { extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: this.alg, use: 'sig' };
    this.keys.push({ kid, privateKey, publicJwk });
    return kid;
  }

  jwks(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => k.publicJwk) };
  }

  /** Serves the JWKS at http://127.0.0.1:<port>/jwks.json. */
  async serve(): Promise<string> {
    this.#server = createServer((req, res) => {
      if (req.url !== '/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      this.jwksFetches += 1;
      if (this.jwksFailure) {
        const { status, body, chunked } = this.jwksFailure;
        res.writeHead(status, { 'content-type': 'application/json', ...(!chunked && { 'content-length': Buffer.byteLength(body) }) }).end(body);
        return;
      }
      const body = JSON.stringify(this.jwks());
      const held = this.#held;
      if (held === undefined) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(body);
        return;
      }
      // The key set as it was when the request arrived, answered once the test lets it go.
      this.#held = undefined;
      held.arrived();
      void held.released.then(() => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve));
    this.#url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/jwks.json`;
    return this.#url;
  }

  /**
   * Holds the next JWKS fetch: it is answered the key set of the moment it arrives, but only once
   * `release` is called (a slow identity provider, or a fetch still in flight when the keys change).
   * `arrived` resolves when that fetch has reached the server.
   */
  holdNextFetch(): { arrived: Promise<void>; release: () => void } {
    const arrived = Promise.withResolvers<void>();
    const released = Promise.withResolvers<void>();
    this.#held = { arrived: arrived.resolve, released: released.promise };
    return { arrived: arrived.promise, release: released.resolve };
  }

  get jwksUri(): string {
    return this.#url;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  /**
   * Signs claims; defaults give a valid token for audience `https://api.example.com`.
   * `kid` picks the signing key; `withoutKid` leaves it out of the header (verifiers must then try the candidates).
   */
  async sign(
    claims: JWTPayload & Record<string, unknown> = {},
    options: { kid?: string; alg?: string; typ?: string; key?: CryptoKey; iat?: number; exp?: number; withoutKid?: boolean } = {},
  ): Promise<string> {
    const key = this.keys.find((k) => k.kid === (options.kid ?? this.keys[0]!.kid)) ?? this.keys[0]!;
    const now = Math.floor(Date.now() / 1000);
    const iat = options.iat ?? now;
    return new SignJWT({ iss: this.issuer, sub: 'user:alice', aud: 'https://api.example.com', iat, exp: options.exp ?? iat + 600, ...claims })
      .setProtectedHeader({ alg: options.alg ?? this.alg, ...(!options.withoutKid && { kid: options.kid ?? key.kid }), typ: options.typ ?? 'at+jwt' })
      .sign(options.key ?? key.privateKey);
  }
}
