// pingap admin UI: plain JavaScript, no build step, no CDN. It talks to /api with
// pingap's login token (sha256 of "user:pass:ts", then ":ts"), computed per request.
"use strict";

const SECTIONS = ["servers", "locations", "upstreams", "plugins", "certificates", "storages"];
const URL_NAME = {basic: "basic", servers: "server", locations: "location", upstreams: "upstream",
                  plugins: "plugin", certificates: "certificate", storages: "storage"};
const base = location.pathname.replace(/[^/]*$/, "");
const state = {schema: null, render: 0};
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function token() {
  const ts = Math.floor(Date.now() / 1000);
  const text = `${sessionStorage.user}:${sessionStorage.password}:${ts}`;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex}:${ts}`;
}

async function api(method, path, body, headers = {}) {
  const init = {method, headers: {...headers, Authorization: await token()}};
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let reply = await fetch(base + "api/" + path, init);
  for (let attempt = 0; reply.status === 503 && reply.headers.get("Retry-After") === "0" && attempt < 5; attempt++) {
    // that worker is being replaced after a reload: the retry takes a fresh connection
    init.headers.Authorization = await token();
    reply = await fetch(base + "api/" + path, init);
  }
  const text = await reply.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {message: text}; }
  if (reply.status === 401) logout("Your login expired or was refused.");
  return {status: reply.status, etag: reply.headers.get("ETag"), data};
}

function logout(message) {
  delete sessionStorage.user; delete sessionStorage.password;
  $("#nav").hidden = true; $("#view").hidden = true; $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

function show(ticket, ...nodes) {
  // a view that finished after a newer one started (a slower fetch) is dropped
  if (ticket !== state.render) return;
  const view = $("#view");
  view.replaceChildren(...nodes);
  view.hidden = false;
}

function navigate(hash) { location.hash = hash; }

async function route() {
  state.render += 1;
  if (!sessionStorage.user) return logout();
  if (!state.schema) {
    const reply = await api("GET", "schema");
    if (reply.status !== 200) return;
    state.schema = reply.data;
  }
  const [page, section, name] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === (page || "dashboard") &&
                          (!link.dataset.section || link.dataset.section === section));
  }
  if (page === "list") return listView(section);
  if (page === "edit") return editView(section, name || "");
  if (page === "history") return historyView(section, name);
  if (page === "toml") return tomlView();
  if (page === "route") return routeView();
  return dashboard();
}

function buildNav() {
  const nav = $("#nav");
  nav.replaceChildren(
    el("a", {href: "#/dashboard", "data-page": "dashboard"}, "Dashboard"),
    el("a", {href: "#/edit/basic", "data-page": "edit", "data-section": "basic"}, "Basic"),
    ...SECTIONS.map((s) => el("a", {href: `#/list/${s}`, "data-page": "list", "data-section": s},
                             s[0].toUpperCase() + s.slice(1))),
    el("a", {href: "#/toml", "data-page": "toml"}, "TOML"),
    el("a", {href: "#/route", "data-page": "route"}, "Route tester"),
    el("a", {onclick: () => logout()}, "Log out"));
  nav.hidden = false;
}

const REFRESH_MS = 2000;

async function dashboard() {
  // live: the figures are fetched again every REFRESH_MS while this page is shown
  const ticket = state.render;
  const [configs, certs] = await Promise.all([api("GET", "configs"), api("GET", "certificates")]);
  const counts = SECTIONS.map((s) => [s, Object.keys((configs.data || {})[s] || {}).length]);
  const refresh = async () => {
    if (ticket !== state.render) return;  // another page is shown now
    if (!document.hidden) {
      const basic = await api("GET", "basic");
      if (basic.status === 200) renderDashboard(ticket, basic.data, counts, certs.data || {});
    }
    setTimeout(refresh, REFRESH_MS);
  };
  await refresh();
}

function renderDashboard(ticket, info, counts, certs) {
  const stat = (id, label, value) => el("div", {class: "stat", id: `stat-${id}`},
                                        el("b", {}, value === null || value === undefined ? "…" : value), label);
  const table = (head, rows) => el("table", {}, el("tr", {}, head.map((h) => el("th", {}, h))), rows);
  const workers = (info.worker_processes || []).map((w) => el("tr", {},
    el("td", {}, w.pid), el("td", {}, w.generation), el("td", {}, w.state),
    el("td", {}, w.connections), el("td", {}, w.requests)));
  const upstreams = Object.entries(info.upstream_healthy_status || {}).map(([name, u]) => el("tr", {id: `upstream-${name}`},
    el("td", {}, name), el("td", {class: u.healthy < u.total ? "error" : "ok"}, `${u.healthy}/${u.total} up`),
    el("td", {}, Object.entries(u.backends || {}).map(([addr, health]) =>
      el("span", {class: `backend ${health}`}, `${addr} ${health}`)))));
  const validity = info.certificates || {};
  const rows = Object.entries(certs).map(([name, cert]) => {
    const days = (validity[name] || {}).days_left ?? Math.floor((cert.not_after * 1000 - Date.now()) / 86400000);
    return el("tr", {id: `certificate-${name}`}, el("td", {}, name), el("td", {}, cert.domains.join(", ")),
              el("td", {class: days < 14 ? "error" : ""}, `${days} days`));
  });
  show(ticket, el("h2", {}, "Dashboard"),
       el("div", {class: "stats"}, stat("workers", "workers", info.workers),
          stat("connections", "open connections", info.connections),
          stat("rps", "requests/s", info.requests_per_second),
          stat("processing", "processing", info.processing), stat("accepted", "accepted", info.accepted),
          stat("memory", "memory", info.memory), stat("version", "version", info.version),
          stat("pid", "master pid", info.pid), stat("generation", "generation", info.generation)),
       el("p", {class: "counts"}, "Config: ", counts.map(([s, n]) => el("a", {href: `#/list/${s}`}, `${n} ${s}`))),
       el("div", {class: "card"}, el("h3", {}, "Upstreams"),
          table(["name", "health", "backends"], upstreams)),
       el("div", {class: "card"}, el("h3", {}, "Workers"),
          table(["pid", "generation", "state", "connections", "requests"], workers)),
       el("div", {class: "card"}, el("h3", {}, "Certificates"),
          table(["name", "domains", "expires in"], rows)));
}

async function listView(section) {
  const ticket = state.render;
  const reply = await api("GET", `configs/${URL_NAME[section]}`);
  const names = Object.keys(reply.data || {}).sort();
  show(ticket, el("h2", {}, section),
       el("div", {class: "card"},
          el("table", {}, names.map((name) => el("tr", {},
             el("td", {}, el("a", {href: `#/edit/${section}/${encodeURIComponent(name)}`}, name)),
             el("td", {}, reply.data[name].remark || ""))))),
       el("button", {id: "new-entry", onclick: () => navigate(`#/edit/${section}/`)}, "New"));
}

function encode(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function decode(text, kind) {
  if (text === "") return undefined;
  if (kind === "str" || kind === "duration" || kind === "bytesize") {
    if (kind !== "str" && /^\d+$/.test(text)) return Number(text);
    return text;
  }
  try { return JSON.parse(text); } catch (e) {
    return kind === "str_list" ? text.split(",").map((s) => s.trim()).filter(Boolean) : text;
  }
}

function fieldsOf(section, values) {
  const fields = {...state.schema[section]};
  if (section === "plugins" && values.category) {
    for (const option of state.schema.plugin_categories[values.category] || []) {
      fields[option] = fields[option] || {kind: "any", doc: `${values.category} option`};
    }
  }
  for (const key of Object.keys(values)) fields[key] = fields[key] || {kind: "any", doc: ""};
  return fields;
}

async function editView(section, name) {
  const ticket = state.render;
  const isBasic = section === "basic";
  const isNew = !isBasic && !name;
  let values = {}, etag = null;
  if (!isNew) {
    const reply = await api("GET", isBasic ? "configs/basic" : `configs/${URL_NAME[section]}/${encodeURIComponent(name)}`);
    if (reply.status !== 200) return show(ticket, el("p", {class: "error"}, reply.data.message));
    values = reply.data; etag = reply.etag;
  }
  const fields = fieldsOf(section, values);
  const form = el("form", {class: "card", id: "editor"});
  if (isNew) {
    form.append(el("div", {class: "field"}, el("label", {for: "entry-name"}, "name"),
                   el("input", {id: "entry-name", required: ""}), el("p", {class: "error", id: "e-name"})));
  }
  for (const [key, spec] of Object.entries(fields)) {
    form.append(el("div", {class: "field"},
      el("label", {for: `f-${key}`}, key),
      el("input", {id: `f-${key}`, "data-key": key, "data-kind": spec.kind, value: encode(values[key])}),
      el("small", {}, spec.doc),
      el("p", {class: "error", id: `e-${key}`})));
  }
  const message = el("p", {id: "message"});
  form.append(message, el("button", {type: "submit", id: "save"}, "Save"));
  if (!isNew && !isBasic) {
    form.append(el("button", {type: "button", class: "secondary", id: "history",
                              onclick: () => navigate(`#/history/${section}/${encodeURIComponent(name)}`)}, "History"),
                el("button", {type: "button", class: "secondary", id: "delete", onclick: async () => {
                  if (!confirm(`Delete ${section}.${name}?`)) return;
                  const reply = await api("DELETE", `configs/${URL_NAME[section]}/${encodeURIComponent(name)}`);
                  if (reply.status === 200) navigate(`#/list/${section}`); else showProblems(section, name, reply, message);
                }}, "Delete"));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const entryName = isNew ? $("#entry-name").value.trim() : name;
    const body = {};
    for (const input of form.querySelectorAll("input[data-key]")) {
      const value = decode(input.value.trim(), input.dataset.kind);
      if (value !== undefined) body[input.dataset.key] = value;
    }
    const path = isBasic ? "configs/basic" : `configs/${URL_NAME[section]}/${encodeURIComponent(entryName)}`;
    const reply = await api("POST", path, body, etag ? {"If-Match": etag} : {});
    if (reply.status === 200) {
      // the page shows the entry as saved (new ETag), then says so
      if (isNew) history.replaceState(null, "", `#/edit/${section}/${encodeURIComponent(entryName)}`);
      await editView(section, isBasic ? "" : entryName);
      const saved = $("#message");
      saved.className = "ok"; saved.textContent = `Saved; ${reply.data.message}.`;
    } else {
      showProblems(section, entryName, reply, message);
    }
  });
  show(ticket, el("h2", {}, isBasic ? "basic" : `${section}.${name || "(new)"}`), form);
}

function showProblems(section, name, reply, message) {
  for (const node of document.querySelectorAll(".field .error")) node.textContent = "";
  message.className = "error";
  message.textContent = reply.data ? reply.data.message : `HTTP ${reply.status}`;
  const prefix = section === "basic" ? "basic." : `${section}.${name}.`;
  for (const problem of (reply.data && reply.data.problems) || []) {
    const at = problem.indexOf(": " + prefix);
    if (at < 0) { message.textContent += ` — ${problem}`; continue; }
    const rest = problem.slice(at + 2 + prefix.length);
    const key = rest.split(/[.\[:]/)[0];
    const target = document.getElementById(`e-${key}`);
    const text = rest.slice(rest.indexOf(": ") + 2);
    if (target) target.textContent = text; else message.textContent += ` — ${problem}`;
  }
}

function diff(before, after) {
  const a = before.split("\n"), b = after.split("\n");
  const out = [];
  for (const line of a) if (!b.includes(line)) out.push(el("span", {class: "del"}, `- ${line}\n`));
  for (const line of b) out.push(a.includes(line) ? `  ${line}\n` : el("span", {class: "add"}, `+ ${line}\n`));
  return el("pre", {class: "diff"}, out);
}

async function historyView(section, name) {
  const ticket = state.render;
  const path = `configs/${URL_NAME[section]}/${encodeURIComponent(name)}`;
  const [current, history] = await Promise.all(
    [api("GET", path), api("GET", `config-history/${URL_NAME[section]}/${encodeURIComponent(name)}`)]);
  const now = JSON.stringify(current.data, null, 2);
  const items = ((history.data || {}).history || []).map((item, index) => el("div", {class: "card"},
    el("h3", {}, new Date(item.created_at * 1000).toLocaleString()),
    el("p", {}, "Changes from this version to the current one:"),
    diff(JSON.stringify(item.data, null, 2), now),
    el("button", {class: "rollback", id: `rollback-${index}`, onclick: async () => {
      const reply = await api("POST", path, item.data, current.etag ? {"If-Match": current.etag} : {});
      if (reply.status === 200) navigate(`#/edit/${section}/${encodeURIComponent(name)}`);
      else alert(reply.data.message + "\n" + (reply.data.problems || []).join("\n"));
    }}, "Roll back to this version")));
  show(ticket, el("h2", {}, `History of ${section}.${name}`),
       ...(items.length ? items
           : [el("p", {}, "No history (the storage keeps it with enable_history=true).")]));
}

async function tomlView() {
  const ticket = state.render;
  const reply = await api("GET", "configs/toml");
  const area = el("textarea", {id: "toml"});
  area.value = reply.data.toml;
  const message = el("p", {id: "message"});
  show(ticket, el("h2", {}, "Config as TOML"),
       el("div", {class: "card"}, el("p", {}, "Secrets are shown masked; importing the mask keeps the stored value."),
          area, message,
          el("button", {id: "import", onclick: async () => {
            const result = await api("POST", "configs/import", area.value);
            message.className = result.status === 200 ? "ok" : "error";
            message.textContent = result.data.message + " " + (result.data.problems || []).join("; ");
          }}, "Import")));
}

function routeView() {
  const ticket = state.render;
  const input = (id, label, value = "") => el("div", {class: "field"}, el("label", {for: id}, label),
                                               el("input", {id, value}));
  const out = el("div", {id: "route-result"});
  const form = el("form", {class: "card"}, input("rt-server", "server (empty: the only one)"),
    input("rt-url", "URL (path?query)", "/"), input("rt-headers", "headers (JSON)", "{}"),
    el("button", {type: "submit"}, "Test"), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let headers = {};
    try { headers = JSON.parse($("#rt-headers").value || "{}"); } catch (e) { out.textContent = "headers: not JSON"; return; }
    const reply = await api("POST", "route-test", {server: $("#rt-server").value, url: $("#rt-url").value, headers});
    if (reply.status !== 200) { out.textContent = reply.data.message; return; }
    const r = reply.data;
    out.replaceChildren(el("p", {}, r.location ? `${r.location} serves it: upstream ${r.upstream}, path ${r.path}` : "No location matches (404)."),
      el("table", {}, r.steps.map((s) => el("tr", {}, el("td", {}, s.location), el("td", {}, s.weight), el("td", {}, s.result)))));
  });
  show(ticket, el("h2", {}, "Route tester"), form);
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.user = $("#user").value;
  sessionStorage.password = $("#password").value;
  const reply = await api("GET", "basic");
  if (reply.status !== 200) return;
  $("#login").hidden = true;
  buildNav();
  route();
});
window.addEventListener("hashchange", route);
if (sessionStorage.user) { $("#login").hidden = true; buildNav(); route(); }
