// Mint a bench access token (what an IdP would issue) for PostGraphile in bench/compare.py.
//   node jwt_mint.mjs <tenant-uuid> [ttl_seconds=7200] [user-uuid]     -> prints the JWT
// Copied by bench/compare.py next to its PostGraphile install (so `jsonwebtoken` resolves from its node_modules).
// RS256 (default): a 2048-bit key pair is generated once into $PGL_DIR/jwt/ (never into the repo);
// graphile.gwm.config.mjs verifies with the public half. HS256: BENCH_JWT_ALG=HS256 [BENCH_JWT_SECRET].
// Claims: iss, aud, sub, tenant_id, iat, exp, and user_id when a user is given (the caller whose documents'
// access levels apply: graphile.gwm.config.mjs passes it as bench.user_id); must match graphile.gwm.config.mjs.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createPrivateKey, createSecretKey, generateKeyPairSync } from "node:crypto";
import jwt from "jsonwebtoken";

const [tenantId, ttl = "7200", userId] = process.argv.slice(2);
const UUID = /^[0-9a-f-]{36}$/i;
if (!UUID.test(tenantId ?? "") || (userId !== undefined && !UUID.test(userId))) {
  console.error("usage: jwt_mint.mjs <tenant-uuid> [ttl_s] [user-uuid]");
  process.exit(2);
}
const ALG = process.env.BENCH_JWT_ALG ?? "RS256";
let key;
if (ALG.startsWith("HS")) {
  key = createSecretKey(Buffer.from(process.env.BENCH_JWT_SECRET ?? "bench-only-hs256-secret-not-for-production-0123456789"));
} else {
  const dir = new URL("./jwt/", import.meta.url);
  const priv = new URL("rs256_private.pem", dir), pub = new URL("rs256_public.pem", dir);
  if (!existsSync(priv) || !existsSync(pub)) {
    mkdirSync(dir, { recursive: true });
    const kp = generateKeyPairSync("rsa", { modulusLength: 2048 });
    writeFileSync(priv, kp.privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    writeFileSync(pub, kp.publicKey.export({ type: "spki", format: "pem" }));
  }
  key = createPrivateKey(readFileSync(priv));
}
console.log(jwt.sign(userId ? { tenant_id: tenantId, user_id: userId } : { tenant_id: tenantId }, key, {
  algorithm: ALG, audience: "bench-gateway", issuer: "bench-idp", subject: "bench-user", expiresIn: Number(ttl),
}));
