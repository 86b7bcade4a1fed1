// PostGraphile v5 for bench/writes.py --compare: graphile.gwm.config.mjs (role gwm_app, app.tenant_id from the
// verified RS256 JWT) plus the settings the parity trigger (bench/writes/bench_audit.sql) reads: the acting
// user (BENCH_USER_ID, a user of the JWT's tenant), the HMAC key's padded halves (BENCH_AUDIT_IKEY /
// BENCH_AUDIT_OKEY, hex), the caller's address and user agent, and a request id per request.
import { randomUUID } from "node:crypto";
import base from "./graphile.gwm.config.mjs";

const BENCH = {
  "bench.user_id": process.env.BENCH_USER_ID ?? "",
  "bench.audit_ikey": process.env.BENCH_AUDIT_IKEY ?? "",
  "bench.audit_okey": process.env.BENCH_AUDIT_OKEY ?? "",
};

/** @type {GraphileConfig.Preset} */
const preset = {
  ...base,
  grafast: {
    ...base.grafast,
    context(requestContext) {
      const context = base.grafast.context(requestContext);
      const http = requestContext.http;
      return {
        ...context,
        pgSettings: {
          ...context.pgSettings,
          ...BENCH,
          "bench.ip": "127.0.0.1",
          "bench.user_agent": http?.getHeader("user-agent") ?? "",
          "bench.request_id": randomUUID(),
        },
      };
    },
  },
};
export default preset;
