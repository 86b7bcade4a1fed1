// PostGraphile v5 pointed at the project's own database (the side-by-side of bench/compare.py).
// Amber preset + simplify-inflection, schema `public`, connecting as the gateway's unprivileged role gwm_app
// (NOSUPERUSER, NOBYPASSRLS), or as a member of it (compare.py: gwm_bench_pgl, below), over the embedded
// cluster's unix socket (GWM_PGL_DATABASE_URL).
// The gateway's FORCE RLS policies read app.tenant_id; it comes from a verified RS256 JWT on every request
// (keys from jwt_mint.mjs) and is passed as pgSettings {"app.tenant_id": ...}.
// Documents' access levels (docs/enums.md AccessLevel): the token's user_id claim (the caller) is passed as
// pgSettings {"bench.user_id": ...}; bench/compare.py connects as its own login role gwm_bench_pgl (a member of
// gwm_app) whose RESTRICTIVE policy on documents reads it: restricted and confidential documents only for their
// named readers and their uploader, as the gateway's row rule (auth/rules.py, resolvers/common/scope.py).
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
function claimsFromRequest(requestContext) {
  const http = requestContext.http;
  if (!VERIFY_JWT) return { tenant_id: http?.getHeader("x-tenant-id"), user_id: http?.getHeader("x-user-id") };
  const m = /^Bearer +(\S+)$/i.exec(http?.getHeader("authorization") ?? "");
  if (!m) throw unauthorized("missing bearer token");
  let claims;
  try { claims = jwt.verify(m[1], KEY, VERIFY_OPTIONS); } catch (e) { throw unauthorized(`invalid token: ${e.message}`); }
  return claims;
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
      const { tenant_id: tenantId, user_id: userId } = claimsFromRequest(requestContext);
      if (typeof tenantId !== "string" || !UUID_RE.test(tenantId)) throw unauthorized("no tenant_id in token");
      if (userId === undefined || userId === null) return { pgSettings: { "app.tenant_id": tenantId } };
      if (typeof userId !== "string" || !UUID_RE.test(userId)) throw unauthorized("user_id in token is not a uuid");
      return { pgSettings: { "app.tenant_id": tenantId, "bench.user_id": userId } };
    },
  },
};
export default preset;
