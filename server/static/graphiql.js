/*
 * GWM CRM's GraphiQL page: a sign-in bar and GraphiQL (with the explorer plugin).
 *
 * Loaded last by /graphiql, after React, ReactDOM, GraphiQL, graphql-ws and the explorer plugin
 * (all served by this server). Every request goes to this origin:
 * - queries POST to /graphql with the session cookie (same-origin credentials), or with the
 *   `Authorization: Bearer ...` header an analyst pastes into GraphiQL's headers editor (headers
 *   are not persisted: a token never lands in localStorage);
 * - the bar signs in with POST /auth/login (JSON), verifies MFA with POST /auth/mfa/verify and
 *   signs out with POST /auth/logout; the session token stays in its HttpOnly cookie;
 * - for the organization typed in, it asks GET /auth/methods which sign-in methods it offers and,
 *   when it has an OpenID provider, shows "Sign in with <provider>": a link to
 *   /auth/oidc/<organization>/login, whose callback sets the session cookie and comes back here;
 * - subscription operations would go over graphql-transport-ws to ws(s)://<this host>/graphql;
 *   the client is lazy and opens no connection before the first subscription.
 */
(function () {
  "use strict";

  var h = React.createElement;
  var root = document.getElementById("graphiql");
  var endpoint = new URL(root.getAttribute("data-endpoint") || "/graphql", window.location.href);
  var wsEndpoint = new URL(endpoint.href);
  wsEndpoint.protocol = endpoint.protocol === "https:" ? "wss:" : "ws:";

  var DEFAULT_QUERY = [
    "# GWM CRM GraphQL. Sign in above, or paste a token into Headers below:",
    '#   { "Authorization": "Bearer <token>" }',
    "# Run with Ctrl-Enter; Ctrl-Space completes; the Docs and Explorer panes browse the schema.",
    "",
    "{",
    "  viewer {",
    "    user {",
    "      email",
    "    }",
    "    permissions",
    "  }",
    "}",
    "",
  ].join("\n");

  var bar = {
    status: document.getElementById("gwm-status"),
    message: document.getElementById("gwm-message"),
    signIn: document.getElementById("gwm-sign-in"),
    mfa: document.getElementById("gwm-mfa"),
    signOut: document.getElementById("gwm-sign-out"),
    sso: document.getElementById("gwm-sso"),
  };

  // --- HTTP -------------------------------------------------------------------------------

  function request(path, method, body) {
    var init = { method: method, credentials: "same-origin", cache: "no-store", headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    init.headers.accept = "application/json";
    return window.fetch(path, init).then(function (response) {
      var type = response.headers.get("content-type") || "";
      var parsed = type.indexOf("application/json") === 0 ? response.json() : Promise.resolve(null);
      return parsed.then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  function errorMessage(result, fallback) {
    var error = result.data && result.data.error;
    return (error && error.message) || fallback;
  }

  // The fetch GraphiQL uses: same-origin credentials, and the middleware's own JSON errors (401
  // without a credential, MFA or password-change gates) turned into GraphQL errors GraphiQL shows.
  function graphqlFetch(input, init) {
    var options = Object.assign({}, init, { credentials: "same-origin", cache: "no-store" });
    return window.fetch(input, options).then(function (response) {
      var type = response.headers.get("content-type") || "";
      if (response.ok || type.indexOf("application/json") !== 0) {
        return response;
      }
      return response
        .clone()
        .json()
        .then(function (body) {
          if (!body || !body.error || body.data !== undefined) {
            return response;
          }
          var hint = response.status === 401 ? " Sign in above, or set an Authorization header." : "";
          var graphqlBody = {
            errors: [
              {
                message: body.error.message + hint,
                extensions: { code: body.error.code, status: response.status },
              },
            ],
          };
          return new Response(JSON.stringify(graphqlBody), {
            status: 200,
            headers: { "content-type": "application/json" },
          });
        })
        .catch(function () {
          return response;
        });
    });
  }

  var fetcher = GraphiQL.createFetcher({
    url: endpoint.href,
    fetch: graphqlFetch,
    // The server answers plain JSON; no multipart/mixed incremental delivery.
    enableIncrementalDelivery: false,
    wsClient: graphqlWs.createClient({ url: wsEndpoint.href, lazy: true, retryAttempts: 0 }),
  });

  // --- GraphiQL ---------------------------------------------------------------------------

  function initialQuery() {
    var fromUrl = new URLSearchParams(window.location.search).get("query");
    if (fromUrl) {
      return fromUrl;
    }
    try {
      return window.localStorage.getItem("graphiql:query") || DEFAULT_QUERY;
    } catch (e) {
      return DEFAULT_QUERY;
    }
  }

  function initialVariables() {
    return new URLSearchParams(window.location.search).get("variables") || undefined;
  }

  // GraphiQL 3 writes each run's headers into its history (graphiql:queries, graphiql:favorites)
  // even with shouldPersistHeaders off. A pasted token must never reach localStorage: GraphiQL gets
  // a localStorage whose setItem drops the headers of those entries.
  var HISTORY_LISTS = { "graphiql:queries": "queries", "graphiql:favorites": "favorites" };

  function withoutHeaders(key, value) {
    var list = HISTORY_LISTS[key];
    if (!list) {
      return value;
    }
    try {
      var parsed = JSON.parse(value);
      (parsed[list] || []).forEach(function (item) {
        delete item.headers;
      });
      return JSON.stringify(parsed);
    } catch (e) {
      return JSON.stringify({ [list]: [] });
    }
  }

  function historyWithoutHeaders() {
    try {
      var local = window.localStorage;
      return new Proxy(local, {
        get: function (target, property) {
          if (property === "setItem") {
            return function (key, value) {
              target.setItem(key, withoutHeaders(key, String(value)));
            };
          }
          var member = target[property];
          return typeof member === "function" ? member.bind(target) : member;
        },
      });
    } catch (e) {
      return null; // storage disabled: GraphiQL keeps nothing
    }
  }

  var storage = historyWithoutHeaders();
  var startQuery = initialQuery();
  var startVariables = initialVariables();

  function App(props) {
    var state = React.useState(startQuery);
    var query = state[0];
    var setQuery = state[1];
    var explorer = GraphiQLPluginExplorer.useExplorerPlugin({ query: query, onEdit: setQuery });
    return h(GraphiQL, {
      // A new key remounts GraphiQL, which fetches the schema again (after signing in or out).
      key: props.generation,
      fetcher: fetcher,
      query: query,
      onEditQuery: setQuery,
      variables: startVariables,
      defaultQuery: DEFAULT_QUERY,
      plugins: [explorer],
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: false,
      storage: storage,
    });
  }

  var generation = 0;

  function renderGraphiQL() {
    generation += 1;
    ReactDOM.render(h(App, { generation: generation }), root);
  }

  // --- The sign-in bar --------------------------------------------------------------------

  function show(element, visible) {
    element.hidden = !visible;
  }

  function setMessage(text) {
    bar.message.textContent = text || "";
  }

  function setStatus(parts) {
    // parts: strings and {code: "..."} objects; built as DOM nodes, never as HTML.
    bar.status.textContent = "";
    parts.forEach(function (part) {
      if (typeof part === "string") {
        bar.status.appendChild(document.createTextNode(part));
      } else {
        var code = document.createElement("code");
        code.textContent = part.code;
        bar.status.appendChild(code);
      }
    });
  }

  function signedOut() {
    setStatus(["Not signed in: sign in here, or paste ", { code: '{"Authorization": "Bearer <token>"}' },
      " into Headers below and re-fetch the schema."]);
    show(bar.signIn, true);
    show(bar.mfa, false);
    show(bar.signOut, false);
    methodsFor = null; // ask again: the link was hidden while signed in
    checkMethods();
  }

  function signedIn(session) {
    show(bar.signIn, false);
    show(bar.sso, false);
    show(bar.signOut, true);
    if (!session.mfaSatisfied) {
      show(bar.mfa, !session.mfaEnrollmentRequired);
      setStatus([session.mfaEnrollmentRequired
        ? "Your organization requires multi-factor authentication: enroll first (POST /auth/mfa/enroll)."
        : "Enter the code from your authenticator app."]);
      return Promise.resolve();
    }
    show(bar.mfa, false);
    if (session.passwordChangeRequired) {
      setStatus(["Change your temporary password first (POST /auth/password/change)."]);
      return Promise.resolve();
    }
    var viewer = { query: "{ viewer { user { email } } }" };
    return request(endpoint.pathname, "POST", viewer).then(function (result) {
      var user = result.data && result.data.data && result.data.data.viewer.user;
      setStatus(user ? ["Signed in as ", { code: user.email }] : ["Signed in (" + session.kind + ")"]);
    });
  }

  function refreshSession() {
    return request("/auth/session", "GET").then(function (result) {
      if (result.status === 200 && result.data) {
        return signedIn(result.data);
      }
      signedOut();
      return undefined;
    });
  }

  function busy(form, isBusy) {
    Array.prototype.forEach.call(form.querySelectorAll("button, input"), function (element) {
      element.disabled = isBusy;
    });
  }

  function rememberedTenant() {
    try {
      return window.localStorage.getItem("gwm:tenant") || "";
    } catch (e) {
      return "";
    }
  }

  function rememberTenant(tenant) {
    try {
      window.localStorage.setItem("gwm:tenant", tenant);
    } catch (e) {
      // Storage may be disabled; the tenant is only a convenience.
    }
  }

  bar.signIn.elements.tenant.value = rememberedTenant();

  // "Sign in with <provider>" for an organization with an OpenID provider (GET /auth/methods).
  var methodsFor = null;

  function checkMethods() {
    var tenant = bar.signIn.elements.tenant.value.trim().toLowerCase();
    if (tenant === methodsFor) {
      return;
    }
    methodsFor = tenant;
    show(bar.sso, false);
    if (!tenant) {
      return;
    }
    request("/auth/methods?tenant=" + encodeURIComponent(tenant), "GET")
      .then(function (result) {
        var oidc = result.status === 200 && result.data && result.data.oidc;
        if (methodsFor !== tenant || bar.signIn.hidden || !oidc) {
          return;
        }
        bar.sso.href = oidc.loginUrl;
        bar.sso.textContent = "Sign in with " + oidc.name;
        show(bar.sso, true);
      })
      .catch(function () {
        return undefined; // the password form still works
      });
  }

  var methodsTimer = null;
  bar.signIn.elements.tenant.addEventListener("input", function () {
    window.clearTimeout(methodsTimer);
    methodsTimer = window.setTimeout(checkMethods, 300);
  });
  bar.signIn.elements.tenant.addEventListener("change", checkMethods);
  bar.sso.addEventListener("click", function () {
    rememberTenant(bar.signIn.elements.tenant.value.trim());
  });

  bar.signIn.addEventListener("submit", function (event) {
    event.preventDefault();
    var form = bar.signIn.elements;
    var body = { email: form.email.value.trim(), password: form.password.value };
    var tenant = form.tenant.value.trim();
    if (tenant) {
      body.tenant = tenant;
    }
    setMessage("");
    busy(bar.signIn, true);
    request("/auth/login", "POST", body)
      .then(function (result) {
        form.password.value = "";
        if (result.status !== 200) {
          setMessage(errorMessage(result, "Sign-in failed (HTTP " + result.status + ")."));
          return undefined;
        }
        rememberTenant(tenant);
        return refreshSession().then(function () {
          if (bar.signIn.hidden) {
            renderGraphiQL();
          } else {
            setMessage("Signed in, but the browser kept no session cookie (it is Secure: use https, " +
              "localhost or 127.0.0.1), so paste a token into Headers instead.");
          }
        });
      })
      .catch(function () {
        setMessage("The server did not answer.");
      })
      .then(function () {
        busy(bar.signIn, false);
      });
  });

  bar.mfa.addEventListener("submit", function (event) {
    event.preventDefault();
    var code = bar.mfa.elements.code;
    setMessage("");
    busy(bar.mfa, true);
    request("/auth/mfa/verify", "POST", { code: code.value.trim() })
      .then(function (result) {
        code.value = "";
        if (result.status !== 204) {
          setMessage(errorMessage(result, "Verification failed (HTTP " + result.status + ")."));
          return undefined;
        }
        return refreshSession().then(renderGraphiQL);
      })
      .catch(function () {
        setMessage("The server did not answer.");
      })
      .then(function () {
        busy(bar.mfa, false);
      });
  });

  bar.signOut.addEventListener("click", function () {
    setMessage("");
    request("/auth/logout", "POST")
      .catch(function () {
        return undefined;
      })
      .then(refreshSession)
      .then(renderGraphiQL);
  });

  // Learn the session first, so a signed-in analyst's first schema fetch carries the cookie.
  refreshSession()
    .catch(function () {
      setMessage("The server did not answer.");
    })
    .then(renderGraphiQL);
})();
