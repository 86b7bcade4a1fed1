// PostGraphile v5 pointed at the project's own database (the side-by-side of bench/compare.py).
// Amber preset + simplify-inflection, schema `public`, connecting as the gateway's unprivileged role gwm_app
// (NOSUPERUSER, NOBYPASSRLS) over the embedded cluster's unix socket (GWM_PGL_DATABASE_URL).
// The gateway's FORCE RLS policies read app.tenant_id; it comes from a verified RS256 JWT on every request
// (keys from jwt_mint.mjs) and is passed as pgSettings {"app.tenant_id": ...}.
// PgIndexBehaviorsPlugin is disabled so that orderBy/condition exist on non-indexed columns
// (documents.created_at, documents.is_deleted) and the query can ask for the gateway's order/filter; it
// only changes what the schema exposes, not how a given query is planned.
import { readFileSync } from "node:fs";
import { createPublicKey } from "node:crypto";
import jwt from "jsonwebtoken";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { makePgService } from "postgraphile/adaptors/pg";
import { PgSimplifyInflectionPreset } from "@graphile/simplify-inflection";

const VERIFY_JWT = process.env.BENCH_JWT !== "0";
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const KEY = VERIFY_JWT ? createPublicKey(readFileSync(new URL("./jwt/rs256_public.pem", import.meta.url))) : null;
const VERIFY_OPTIONS = { algorithms: ["RS256"], audience: "bench-gateway", issuer: "bench-idp", clockTolerance: 5 };

function unauthorized(message) {
  return Object.assign(new Error(message), { statusCode: 401, extensions: { code: "UNAUTHENTICATED" } });
}
function tenantFromRequest(requestContext) {
  const http = requestContext.http;
  if (!VERIFY_JWT) return http?.getHeader("x-tenant-id");
  const m = /^Bearer +(\S+)$/i.exec(http?.getHeader("authorization") ?? "");
  if (!m) throw unauthorized("missing bearer token");
  let claims;
  try { claims = jwt.verify(m[1], KEY, VERIFY_OPTIONS); } catch (e) { throw unauthorized(`invalid token: ${e.message}`); }
  return claims.tenant_id;
}

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset, PgSimplifyInflectionPreset],
  disablePlugins: ["PgIndexBehaviorsPlugin"],
  pgServices: [
    makePgService({
      connectionString: process.env.GWM_PGL_DATABASE_URL ?? "postgresql://gwm_app@/gwm?host=" + (process.env.GWM_PGL_SOCKET_DIR ?? ".gwm-bench/pgdata"),
      schemas: ["public"],
      poolConfig: { max: Number(process.env.PG_POOL_MAX ?? 10) },
    }),
  ],
  grafserv: { host: "127.0.0.1", port: Number(process.env.PORT ?? 5678), graphqlPath: "/graphql", graphiql: false, watch: false },
  grafast: {
    explain: false,
    context(requestContext) {
      const tenantId = tenantFromRequest(requestContext);
      if (typeof tenantId !== "string" || !UUID_RE.test(tenantId)) throw unauthorized("no tenant_id in token");
      return { pgSettings: { "app.tenant_id": tenantId } };
    },
  },
};
export default preset;
