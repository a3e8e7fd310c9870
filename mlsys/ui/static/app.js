// The mlsys dashboard: hash routes drawn from the JSON API under /api (see /docs). No framework, no network.
"use strict";

const main = document.getElementById("main");
const tokenInput = document.getElementById("token");
// The token for this tab's session; as a cookie too (this session, this site only), which ui.private_reads
// accepts for reads, so that the report links the browser follows itself are read (actions take the header only).
function keepToken(value) {
  sessionStorage.setItem("mlsys-token", value);
  const where = `path=${new URL(".", document.baseURI).pathname}; SameSite=Strict${location.protocol === "https:" ? "; Secure" : ""}`;
  document.cookie = value ? `mlsys_ui_token=${encodeURIComponent(value)}; ${where}` : `mlsys_ui_token=; ${where}; max-age=0`;
}
tokenInput.value = sessionStorage.getItem("mlsys-token") || "";
keepToken(tokenInput.value);
tokenInput.addEventListener("change", () => { keepToken(tokenInput.value); if (!HOME) route(); });  // private reads: now they can
let HOME = null;
let SHOWN = null;  // the hash of the page on screen

// -- helpers -----------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const link = (href, text) => h("a", { href }, text);
const badge = (s) => h("span", { class: `status s-${s}` }, s);
const short = (s, n = 12) => (s ? String(s).slice(0, n) : "");
function when(t) { return t ? new Date(t * 1000).toISOString().slice(0, 19).replace("T", "\u00a0").replace(/-/g, "\u2011") : "-"; }  // one line in a cell
function num(x, d = 4) { return x === null || x === undefined ? "-" : typeof x === "number" ? (Number.isInteger(x) ? x.toLocaleString("en") : x.toFixed(d)) : String(x); }
function secs(x) { return x === null || x === undefined ? "-" : `${x.toFixed(1)} s`; }

function table(head, rows, opts = {}) {
  return h("table", { class: opts.class },
    h("thead", {}, h("tr", {}, head.map((c) => h("th", { class: /^(rows|auc|logloss|count|value|seconds|wall|missing|mean|std|threshold|steps ran|requests|5xx|4xx|error rate|p50|p99|events)$/i.test(c) ? "num" : null, scope: "col" }, c)))),
    h("tbody", {}, rows.length ? [] : h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "none")), rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", {}, c))))))));
}

// Every path is relative ("api/runs"): the page's <base> is / under `mlsys ui`, ui.route_prefix behind a Serve proxy.
async function api(path, options = {}) {
  const headers = tokenInput.value && !(options.headers || {}).Authorization ? { Authorization: `Bearer ${tokenInput.value}` } : {};
  const r = await fetch(path, { ...options, headers: { ...headers, ...options.headers } });
  const body = await r.json().catch(() => ({ detail: r.statusText }));
  if (!r.ok) throw new Error(`${r.status}: ${body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : r.statusText}`);
  return body;
}

function act(path, body, out) {
  out.replaceChildren(h("p", { class: "muted" }, "working…"));
  return api(path, {
    method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${tokenInput.value}` },
    body: JSON.stringify(body || {}),
  }).then((r) => { out.replaceChildren(h("div", { class: "message ok", role: "status" }, r.message || JSON.stringify(r))); return r; },
           (e) => { out.replaceChildren(h("div", { class: "message error", role: "alert" }, e.message)); throw e; });
}

// plotly.js 3 dropped the string shorthand of titles ({title: "ms"} draws nothing): pages write it, chart() spells it out.
const titled = (o, at = {}) => (typeof o.title === "string" ? { ...o, title: { text: o.title, ...at } } : o);

function chart(traces, layout = {}) {
  const div = h("div", { class: "chart" });
  const spelled = titled(Object.fromEntries(Object.entries(layout).map(([k, v]) => [k, /^[xy]axis\d*$/.test(k) ? titled(v) : v])), { x: 0, xanchor: "left" });  // the chart's own title at the left, clear of plotly's buttons
  requestAnimationFrame(() => Plotly.newPlot(div, traces, { margin: { t: layout.title ? 50 : 30, r: 10, b: 40, l: 60 }, legend: { orientation: "h" }, ...spelled },
                                               { displaylogo: false, responsive: true }));
  return div;
}

function page(title, ...content) {
  document.title = `${title} · mlsys`;
  main.replaceChildren(h("h1", {}, title), ...content.filter((c) => c !== null && c !== undefined));
  main.focus({ preventScroll: true });
}

// -- runs --------------------------------------------------------------------------------

async function runsPage() {
  const runs = await api("api/runs");
  const picked = new Set();
  const compare = h("button", { class: "secondary", disabled: true, onclick: () => { const [a, b] = [...picked]; location.hash = `#/diff/${a}/${b}`; } }, "Compare two selected");
  const rows = runs.map((r) => [
    h("td", {}, h("input", { type: "checkbox", "aria-label": `select run ${r.name}`, onchange: (e) => {
      e.target.checked ? picked.add(r.run_id) : picked.delete(r.run_id); compare.disabled = picked.size !== 2; } })),
    link(`#/runs/${r.run_id}`, r.name), badge(r.status), when(r.start), h("td", { class: "num" }, secs(r.wall_s)),
    h("td", { class: "num" }, num(r.steps_ran)), h("code", {}, (r.overrides || []).join(" ") || "-"),
  ]);
  const out = h("div");
  const overrides = h("input", { id: "overrides", size: 60, placeholder: "train.num_workers=2 model=din", "aria-label": "Hydra overrides" });
  const launch = h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    act("api/actions/run", { overrides: overrides.value.split(/\s+/).filter(Boolean) }, out).then((r) => followJob(r.submission_id, out));
  } }, h("label", { for: "overrides" }, "Overrides (Hydra)", overrides), h("button", { type: "submit" }, "Launch run"));
  page(`Pipeline runs (${runs.length})`,
    h("section", { class: "card" }, h("h2", {}, "Launch a run as a Ray job"), h("p", { class: "muted" },
      "mlsys run on this home with these overrides; multi-worker training is one field: train.num_workers=2."), launch, out),
    h("section", { class: "card" }, compare, table(["", "run", "status", "started (UTC)", "wall", "steps ran", "overrides"], rows)));
}

function followJob(id, out) {
  const status = h("p", {}, "job ", h("code", {}, id), " ", badge("PENDING"));
  const log = h("pre", { class: "log", "aria-label": "job log" });
  out.append(status, log);
  const poll = async () => {
    const j = await api(`api/jobs/${id}?tail=20000`).catch((e) => ({ status: "unknown", log: e.message }));
    status.replaceChildren("job ", h("code", {}, id), " ", badge(j.status));
    log.textContent = j.log;
    log.scrollTop = log.scrollHeight;
    if (!["SUCCEEDED", "FAILED", "STOPPED"].includes(j.status) && document.body.contains(log)) setTimeout(poll, 2000);
  };
  poll();
}

async function runPage(id) {
  const r = await api(`api/runs/${id}`);
  const steps = r.steps.map((s) => [s.name, badge(s.status), h("td", { class: "num" }, secs(s.seconds)), h("td", { class: "num" }, num(s.rows)),
    h("code", {}, short(s.fingerprint)), s.cached_from ? h("span", {}, "cached from ", h("code", {}, short(s.cached_from))) : (s.reason || "-")]);
  const evaluate = r.steps.find((s) => s.name === "evaluate");
  const rerun = h("input", { size: 60, value: (r.overrides || []).join(" "), "aria-label": "overrides for the rerun" });
  const out = h("div");
  page(`Run ${r.name}`,
    h("p", {}, badge(r.status), ` started ${when(r.start)} UTC, wall ${secs(r.wall_s)}; `, link(`#/data/${r.run_id}`, "data of this run"),
      " · overrides ", h("code", {}, (r.overrides || []).join(" ") || "(none)")),
    evaluate ? h("p", {}, "evaluation: ", Object.entries(evaluate.metrics).filter(([k]) => k.startsWith("eval_")).map(([k, v]) => `${k} ${num(v)}`).join(", ")) : null,
    h("section", { class: "card" }, h("h2", {}, "Steps"), table(["step", "status", "seconds", "rows", "fingerprint", "why"], steps)),
    h("section", { class: "card" }, h("h2", {}, "Rerun with changed overrides"),
      h("form", { class: "inline", onsubmit: (e) => { e.preventDefault();
        act("api/actions/run", { overrides: rerun.value.split(/\s+/).filter(Boolean) }, out).then((j) => followJob(j.submission_id, out)); } },
        rerun, h("button", { type: "submit" }, "Rerun")), out),
    h("section", { class: "card" }, h("details", {}, h("summary", {}, `Resolved config (${Object.keys(r.config).length} keys)`),
      table(["key", "value"], Object.entries(r.config).map(([k, v]) => [h("code", {}, k), h("code", {}, v)])))),
  );
}

async function diffPage(a, b) {
  const d = await api(`api/diff?a=${a}&b=${b}`);
  const diffRow = (x) => { const tr = h("tr", { class: x.a !== x.b ? "anomaly" : null }, h("td", {}, h("code", {}, x.key)), h("td", {}, num(x.a)), h("td", {}, num(x.b))); return tr; };
  page("Two runs side by side",
    h("p", {}, "A ", link(`#/runs/${a}`, short(a)), " ", h("code", {}, d.overrides.a.join(" ") || "(no overrides)"),
      " · B ", link(`#/runs/${b}`, short(b)), " ", h("code", {}, d.overrides.b.join(" ") || "(no overrides)")),
    h("section", { class: "card" }, h("h2", {}, `Config keys that differ (${d.config.length})`), table(["key", "A", "B"], d.config.map(diffRow))),
    h("section", { class: "card" }, h("h2", {}, "Metrics"), table(["metric", "A", "B"], d.metrics.map(diffRow))));
}

// -- data --------------------------------------------------------------------------------

function featureRows(stats, anomalies) {
  const flagged = new Set((anomalies || []).map((a) => a.feature));
  return Object.entries(stats.features).map(([name, f]) => {
    const top = f.top ? f.top.slice(0, 4).map(([v, c]) => `${v} ${(100 * c / Math.max(1, f.count - f.missing)).toFixed(1)}%`).join(", ") : "";
    return h("tr", { class: flagged.has(name) ? "anomaly" : null }, h("td", {}, name), h("td", {}, f.kind), h("td", { class: "num" }, num(f.count)),
      h("td", { class: "num" }, `${(100 * f.missing / Math.max(1, f.count)).toFixed(1)}%`), h("td", { class: "num" }, num(f.mean)), h("td", { class: "num" }, num(f.std)),
      h("td", {}, top || (f.quantiles ? `p50 ${num(f.quantiles.p50)}` : "")));
  });
}

async function dataPage(id) {
  const d = await api(`api/runs/${id}/data`);
  const splits = Object.keys(d.splits);
  const anomalies = (d.anomalies || []).flatMap((r) => r.anomalies.map((a) => ({ ...a, dataset: r.name })));
  const sections = splits.map((s) => h("section", { class: "card" }, h("h2", {}, `${s}: ${num(d.splits[s].rows)} rows`),
    table(["feature", "kind", "count", "missing", "mean", "std", "top values / median"], featureRows(d.splits[s], anomalies))));
  const feature = h("select", { "aria-label": "feature to chart" }, Object.keys(d.splits[splits[0]]?.features || {}).map((f) => h("option", { value: f }, f)));
  const charts = h("div", { class: "row" });
  const draw = () => {
    charts.replaceChildren(...splits.map((s) => {
      const f = d.splits[s].features[feature.value];
      if (!f) return h("p", {}, `${s}: no ${feature.value}`);
      if (f.histogram) return chart([{ type: "bar", x: f.histogram.edges.slice(0, -1), y: f.histogram.counts, name: s }], { title: `${feature.value} (${s})` });
      if (f.top) return chart([{ type: "bar", x: f.top.slice(0, 20).map((t) => String(t[0])), y: f.top.slice(0, 20).map((t) => t[1]), name: s }], { title: `${feature.value} (${s}): top values` });
      return h("p", {}, `${s}: ${feature.value} has no histogram`);
    }));
  };
  feature.addEventListener("change", draw);
  const q = d.quarantine || { rows: 0, by_reason: {}, sample: [] };
  page(`Data of run ${short(id)}`,
    h("p", {}, link(`#/runs/${id}`, "back to the run"), d.report ? [" · ", link(`api/artifact?uri=${encodeURIComponent(d.report)}`, "the data report (HTML)")] : null,
      " · a feature across spans: ", h("a", { href: `#/spans/${feature.value || ""}`, onclick: (e) => { e.currentTarget.href = `#/spans/${feature.value}`; } }, "spans")),
    h("section", { class: "card" }, h("h2", {}, `Anomalies (${anomalies.length})`),
      anomalies.length ? table(["dataset", "feature", "severity", "measure", "value", "threshold", "message"], anomalies.map((a) => h("tr", { class: "anomaly" },
        h("td", {}, a.dataset), h("td", {}, a.feature), h("td", {}, badge(a.severity)), h("td", {}, a.measure), h("td", { class: "num" }, num(a.value)), h("td", { class: "num" }, num(a.threshold)), h("td", {}, a.message))))
        : h("p", { class: "muted" }, "none")),
    h("section", { class: "card" }, h("h2", {}, "Side by side"), h("label", {}, "Feature", feature), charts),
    ...sections,
    h("section", { class: "card" }, h("h2", {}, `Quarantined rows (${num(q.rows)})`),
      h("p", {}, Object.entries(q.by_reason).map(([k, v]) => `${k}: ${v}`).join(", ") || "none"),
      q.sample.length ? table(Object.keys(q.sample[0]), q.sample.map((r) => Object.values(r).map((v) => h("code", {}, String(v))))) : null));
  draw();
}

async function spansPage(feature) {
  const points = await api(`api/spans?feature=${encodeURIComponent(feature)}`);
  const x = points.map((p) => when(p.at));
  const traces = points.length && points[0].mean !== null && points[0].mean !== undefined
    ? [{ x, y: points.map((p) => p.mean), name: "mean", mode: "lines+markers" }]
    : [...new Set(points.flatMap((p) => (p.top || []).slice(0, 5).map((t) => String(t[0]))))].map((v) => ({
      x, y: points.map((p) => ((p.top || []).find((t) => String(t[0]) === v) || [v, 0])[1]), name: v, mode: "lines+markers" }));
  page(`${feature} across spans`,
    h("section", { class: "card" }, chart([...traces, { x, y: points.map((p) => p.missing_rate), name: "missing rate", yaxis: "y2", mode: "lines" }],
      { yaxis2: { overlaying: "y", side: "right", title: "missing" } })),
    h("section", { class: "card" }, table(["at (UTC)", "source", "span", "rows", "missing"], points.map((p) => [when(p.at), p.source || "-", p.span ?? "-", h("td", { class: "num" }, num(p.rows)), h("td", { class: "num" }, `${(100 * p.missing_rate).toFixed(1)}%`)]))));
}

// -- models, lineage, releases -------------------------------------------------------------

async function modelsPage(name) {
  name = name || HOME.model;
  const m = await api(`api/models/${name}`);
  const rows = m.versions.map((v) => [link(`#/lineage/${name}/${v.version}`, `version ${v.version}`), when(v.created),
    (v.aliases || []).join(", ") || "-", h("td", { class: "num" }, num(v.metrics.auc)), h("td", { class: "num" }, num(v.metrics.logloss)),
    badge(v.blessed === true ? "yes" : v.blessed === false ? "no" : "-"), h("span", {}, v.blessing || ""), h("span", {}, v.pushed || v.infra || "")]);
  const out = h("div");
  const version = h("select", { "aria-label": "version" }, m.versions.map((v) => h("option", { value: v.version }, v.version)));
  const percent = h("input", { type: "number", min: 1, max: 100, value: 10, size: 4, "aria-label": "percent of users" });
  const mode = h("select", { "aria-label": "release mode" }, h("option", { value: "canary" }, "canary"), h("option", { value: "shadow" }, "shadow"));
  const r = m.release;
  const reload = () => setTimeout(() => modelsPage(name), 400);
  const state = r ? [h("p", {}, `${r.alias} is version ${r.champion}. `, r.candidate
    ? h("strong", {}, `In release: version ${r.candidate}, ${r.mode}${r.mode === "canary" ? ` on ${r.percent}% of users` : ""} since ${when(r.started_at)} UTC.`)
    : "No release in progress.")] : [h("p", {}, "Nothing is served: no version has the champion alias.")];
  if (r && r.window) state.push(h("details", {}, h("summary", {}, "per-variant metrics of the last window"), h("pre", { class: "mono" }, JSON.stringify(r.window, null, 1))));
  page(`Model ${name}`,
    h("section", { class: "card", "aria-label": "release" }, h("h2", {}, "Release"), ...state,
      h("form", { class: "inline", onsubmit: (e) => { e.preventDefault();
        act(`api/actions/releases/${name}/start`, { version: version.value, mode: mode.value, percent: Number(percent.value) }, out).then(reload); } },
        h("label", {}, "Version", version), h("label", {}, "Mode", mode), h("label", {}, "Percent", percent), h("button", { type: "submit" }, "Start release")),
      h("form", { class: "inline", onsubmit: (e) => e.preventDefault() },
        h("button", { type: "button", onclick: () => act(`api/actions/releases/${name}/promote`, {}, out).then(reload) }, "Promote release"),
        h("button", { type: "button", class: "danger", onclick: () => act(`api/actions/releases/${name}/rollback`, {}, out).then(reload) }, "Roll back release"),
        h("button", { type: "button", class: "secondary", onclick: () => act(`api/actions/models/${name}/rollback`, {}, out).then(reload) }, "Roll back champion")),
      out),
    h("section", { class: "card" }, h("h2", {}, `Versions (${m.versions.length})`),
      table(["version", "created (UTC)", "aliases", "auc", "logloss", "blessed", "gate", "push"], rows)));
}

async function lineagePage(name, version) {
  const l = await api(`api/models/${name}/${version}/lineage`);
  const feeds = {};
  for (const e of l.edges) (feeds[e.to] = feeds[e.to] || []).push(e);
  const stepOf = Object.fromEntries(l.nodes.map((n) => [n.run_id, n.step]));
  const nodes = l.nodes.map((n) => h("div", { class: "node" },
    h("strong", {}, n.step), " ", h("code", {}, `fingerprint ${short(n.fingerprint)}`), n.cached_from ? h("span", { class: "muted" }, ` (cached, computed in run ${short(n.cached_from)})`) : null,
    h("ul", {}, Object.entries(n.outputs).map(([k, v]) => h("li", {}, `${k}: `, h("code", {}, String(v)), " ",
      typeof v === "string" && v.includes("/") ? h("a", { href: `#/downstream/${encodeURIComponent(v)}` }, "models trained on it") : null))),
    feeds[n.run_id] ? h("div", { class: "arrow" }, "reads ", feeds[n.run_id].map((e) => `${e.input} from ${stepOf[e.from]}`).join(", ")) : null));
  const ev = await api(`api/models/${name}/${version}/evaluation`);
  const cells = {};
  for (const r of ev.rows) {
    const key = `${r.slice}|${r.bucket}|${r.metric}`;
    (cells[key] = cells[key] || { slice: r.slice, bucket: r.bucket, metric: r.metric, examples: r.examples })[r.model] = r;
  }
  const ci = (r) => (r ? `${num(r.value)}${r.low !== null && r.low !== undefined ? ` [${num(r.low, 3)}, ${num(r.high, 3)}]` : ""}` : "-");
  const evaluation = h("section", { class: "card" }, h("h2", {}, "What the gate saw"),
    ev.blessing ? h("p", {}, badge(ev.blessing.blessed ? "yes" : "no"), " ", ev.blessing.reason) : h("p", { class: "muted" }, "no blessing decision recorded"),
    ev.report ? h("p", {}, link(`api/artifact?uri=${encodeURIComponent(ev.report)}`, "the evaluation report (HTML)")) : null,
    ev.rows.length ? table(["slice", "bucket", "metric", "examples", "candidate [95% CI]", "champion [95% CI]"],
      Object.values(cells).map((c) => [c.slice, c.bucket, c.metric, h("td", { class: "num" }, num(c.examples)), ci(c.candidate), ci(c.champion)])) : null,
    ev.estimate ? h("details", {}, h("summary", {}, "pre-release estimate (replayed requests)"), h("pre", { class: "mono" }, JSON.stringify(ev.estimate, null, 1))) : null);
  page(`Lineage of ${name} version ${version}`,
    h("p", {}, "package ", h("code", {}, l.package), l.pipeline_run ? [" · ", link(`#/runs/${l.pipeline_run}`, "its pipeline run"), " · ", link(`#/data/${l.pipeline_run}`, "its data")] : null),
    evaluation,
    h("section", { class: "card" }, h("h2", {}, "From the model back to the data"), nodes));
}

async function downstreamPage(uri) {
  const versions = await api(`api/downstream?uri=${encodeURIComponent(uri)}`);
  page("Models trained on an artifact", h("p", {}, h("code", {}, uri)),
    h("section", { class: "card" }, versions.length ? table(["model", "version"], versions.map((v) => [v.name, link(`#/lineage/${v.name}/${v.version}`, `version ${v.version}`)]))
      : h("p", { class: "muted" }, "no registered model version read it")));
}

// -- tuning --------------------------------------------------------------------------------

async function studiesPage() {
  const studies = await api("api/studies");
  page(`Tuning studies (${studies.length})`,
    h("p", { class: "muted" }, "The tune step's Optuna studies (<home>/optuna.db; optuna-dashboard opens the same file)."),
    h("section", { class: "card" }, table(["study", "started (UTC)", "direction", "trials", "best value", "best parameters"],
      studies.map((s) => [link(`#/tuning/${encodeURIComponent(s.name)}`, s.name), when(s.started), s.direction, h("td", { class: "num" }, num(s.trials)),
        h("td", { class: "num" }, num(s.best_value)), h("code", {}, Object.entries(s.best_params).map(([k, v]) => `${k}=${num(v)}`).join(" "))]))));
}

async function studyPage(name) {
  const st = await api(`api/studies/${encodeURIComponent(name)}`);
  const done = st.trials.filter((t) => t.value !== null && t.value !== undefined);
  const keys = [...new Set(st.trials.flatMap((t) => Object.keys(t.params)))];
  const dimension = (k) => {
    const values = done.map((t) => t.params[k]);
    if (values.every((v) => typeof v === "number")) return { label: k, values };
    const levels = [...new Set(values.map(String))];
    return { label: k, values: values.map((v) => levels.indexOf(String(v))), tickvals: levels.map((_, i) => i), ticktext: levels };
  };
  const coords = done.length ? chart([{ type: "parcoords", line: { color: done.map((t) => t.value), colorscale: "Viridis", showscale: true },
    dimensions: [...keys.map(dimension), { label: "value", values: done.map((t) => t.value) }] }], { margin: { t: 40, r: 60, b: 20, l: 60 } }) : h("p", { class: "muted" }, "no finished trial");
  const curves = chart(st.trials.map((t) => ({ x: Object.keys(t.intermediate).map(Number), y: Object.values(t.intermediate), name: `trial ${t.number}`, mode: "lines+markers" })),
    { xaxis: { title: "epoch" }, yaxis: { title: "reported value" } });
  page(`Study ${name}`,
    h("section", { class: "card" }, h("h2", {}, "Parameters against the value (parallel coordinates)"), coords),
    h("section", { class: "card" }, h("h2", {}, "Per-epoch values (what ASHA saw)"), curves),
    h("section", { class: "card" }, h("h2", {}, `Trials (${st.trials.length})`), table(["trial", "state", "value", "epochs", "parameters"],
      st.trials.map((t) => [String(t.number), badge(t.state), h("td", { class: "num" }, num(t.value)), h("td", { class: "num" }, String(Object.keys(t.intermediate).length)),
        h("code", {}, Object.entries(t.params).map(([k, v]) => `${k}=${num(v)}`).join(" "))]))));
}

// -- monitoring ----------------------------------------------------------------------------

async function monitoringPage(name) {
  name = name || HOME.model;
  const m = await api(`api/monitoring/${name}`);
  const s = m.summary;
  const features = [...new Set(m.windows.flatMap((w) => Object.keys(w.drift || {})))];
  const measure = (w, side, f) => { const d = (w[side] || {})[f] || {}; return d.linf ?? d.js ?? d.psi ?? null; };
  const x = m.windows.map((w) => when(w.end));
  const byVersion = {};
  for (const q of m.quality) (byVersion[q.version] = byVersion[q.version] || []).push(q);
  const quality = Object.entries(byVersion).flatMap(([v, qs]) => [
    { x: qs.map((q) => when(q.end)), y: qs.map((q) => q.auc), name: `v${v} online AUC`, mode: "lines+markers" },
    { x: qs.map((q) => when(q.end)), y: qs.map((q) => (q.offline || {}).auc ?? null), name: `v${v} offline AUC`, mode: "lines", line: { dash: "dot" } }]);
  const served = {};  // version -> its windows with service health
  for (const w of m.windows) if (w.service) (served[w.version] = served[w.version] || []).push(w);
  const line = (ws, y, name, dash) => ({ x: ws.map((w) => when(w.end)), y: ws.map(y), name, mode: "lines+markers", line: { dash } });
  const latency = Object.entries(served).flatMap(([v, ws]) => [line(ws, (w) => w.service.p50_ms, `v${v} p50`, "solid"), line(ws, (w) => w.service.p99_ms, `v${v} p99`, "dot")]);
  const errors = Object.entries(served).flatMap(([v, ws]) => [line(ws, (w) => 100 * w.service.error_rate, `v${v} 5xx`, "solid"),
    line(ws, (w) => 100 * w.service.client_errors / Math.max(1, w.service.requests + w.service.errors + w.service.client_errors), `v${v} 4xx`, "dot")]);
  const ms = (w, k) => h("td", { class: "num" }, w.service[k] !== null ? `${num(w.service[k])} ms` : w.service.requests ? "> 5000 ms" : "-");
  const health = m.windows.filter((w) => w.service).reverse().slice(0, 20).map((w) => [`v${w.version}`, when(w.end), h("td", { class: "num" }, num(w.service.requests)),
    h("td", { class: "num" }, num(w.service.errors)), h("td", { class: "num" }, num(w.service.client_errors)), h("td", { class: "num" }, `${(100 * w.service.error_rate).toFixed(2)}%`),
    ms(w, "p50_ms"), ms(w, "p99_ms"), h("td", { class: "num" }, num(w.service.events))]);
  page(`Monitoring of ${name}`,
    h("p", {}, `${s.windows} windows (${s.judged} judged), versions ${s.versions.join(", ") || "-"}; ${s.firing} alert(s) firing, ${s.fired} fired in all; ${s.retrains} retrain(s); ${s.online_updates} online update(s), ${s.pushed} pushed.`),
    Object.keys(m.unreadable).length ? h("div", { class: "message error", role: "alert" }, `unreadable: ${Object.entries(m.unreadable).map(([k, v]) => `${k} (${v})`).join("; ")}`) : null,
    h("div", { class: "row" },
      h("section", { class: "card" }, h("h2", {}, "Drift per feature (against the previous window)"), m.windows.length
        ? chart(features.map((f) => ({ x, y: m.windows.map((w) => measure(w, "drift", f)), name: f, mode: "lines+markers" })), { yaxis: { title: "distance" } }) : h("p", { class: "muted" }, "no window yet")),
      h("section", { class: "card" }, h("h2", {}, "Skew per feature (against training)"), m.windows.length
        ? chart([...new Set(m.windows.flatMap((w) => Object.keys(w.skew || {})))].map((f) => ({ x, y: m.windows.map((w) => measure(w, "skew", f)), name: f, mode: "lines+markers" })), { yaxis: { title: "distance" } }) : h("p", { class: "muted" }, "no window yet"))),
    h("section", { class: "card" }, h("h2", {}, "Online quality against offline evaluation"), quality.length ? chart(quality, { yaxis: { title: "AUC" } }) : h("p", { class: "muted" }, "no labelled window yet")),
    h("section", { class: "card", "aria-label": "service latency and errors" }, h("h2", {}, "Service latency and errors (every request, per window and version)"),
      latency.length ? [h("div", { class: "row" }, chart(latency, { title: "latency (upper edge of its bucket)", yaxis: { title: "ms", type: "log" } }),
        chart(errors, { title: "errors (share of answers)", yaxis: { title: "%", rangemode: "tozero" } })),
      table(["version", "window end (UTC)", "requests", "5xx", "4xx", "error rate", "p50", "p99", "events"], health)]
        : h("p", { class: "muted" }, "no window with service health yet: the replicas record it with serve.monitoring.enabled (windows written before it carry none)")),
    h("section", { class: "card" }, h("h2", {}, "Alerts"),
      table(["alert", "signal", "state", "severity", "value", "threshold", "since (UTC)"], m.alerts.map((a) => [a.rule, h("code", {}, a.signal), badge(a.state), badge(a.severity), h("td", { class: "num" }, num(a.value)), h("td", { class: "num" }, `${a.op} ${a.threshold}`), when(a.since)])),
      h("h2", {}, `Past transitions (${m.events.length})`),
      table(["at (UTC)", "alert", "signal", "state", "message"], m.events.slice(-50).reverse().map((a) => [when(a.updated_at), a.rule, h("code", {}, a.signal), badge(a.state), a.message]))),
    h("section", { class: "card" }, h("h2", {}, "Retrains"),
      m.retrains.length ? table(["job", "why", "submitted (UTC)", "finished (UTC)", "status"], m.retrains.map((r) => [h("code", {}, r.submission_id), r.reason, when(r.at), when(r.finished_at), badge(r.status)])) : h("p", { class: "muted" }, "none")),
    h("section", { class: "card" }, h("h2", {}, "Online updates"),
      m.online_updates.length ? table(["at (UTC)", "from version", "rows", "AUC serving / new", "pushed", "version", "outcome"], m.online_updates.map((u) => [when(u.at), u.base_version, h("td", { class: "num" }, num(u.rows)), `${num(u.auc_base)} / ${num(u.auc_new)}`, badge(u.pushed ? "yes" : "no"), u.version || "-", u.reason || ""])) : h("p", { class: "muted" }, "none")));
}

// -- features --------------------------------------------------------------------------------

async function featuresPage() {
  const f = await api("api/features");
  const age = (s) => (s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${Math.round(s / 60)} min` : s < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} days`);
  const ago = (t) => (t ? `${when(t)} (${age(Date.now() / 1000 - t)} ago)` : "-");
  const rate = (title, per) => (per.length
    ? chart([{ x: per.map((p) => when(p.hour)), y: per.map((p) => p.count), type: "bar", name: title }], { yaxis: { title: "per hour" }, height: 260 })
    : h("p", { class: "muted" }, "none recorded"));
  const stores = f.stores.map((s) => h("section", { class: "card store", "data-project": s.project },
    h("h2", {}, `Store ${s.project}`),
    h("p", {}, "online ", h("code", {}, s.online.type), " at ", h("code", {}, s.online.where || "-"), " · offline ", h("code", {}, s.offline || "-"),
      " · repo ", h("code", {}, s.path)),
    h("h3", {}, "Feature views"),
    table(["view", "entity", "features (type)", "source", "push source", "rows", "newest row (UTC)", "online rows"], s.views.map((v) => [
      h("code", {}, v.name), v.entity || "-", v.fields.map((x) => `${x.name} (${x.type})`).join(", "), h("code", {}, v.source.split("/").slice(-2).join("/")),
      v.push_source || "-", h("td", { class: "num" }, num(v.rows)), when(v.newest), h("td", { class: "num" }, s.online.rows ? num(s.online.rows[v.name] ?? 0) : "-")])),
    s.services.map((x) => h("p", {}, "feature service ", h("code", {}, x.name), `: ${x.views.join(", ")}`)),
    !s.views.length && s.online.rows ? h("p", {}, `online tables (no offline sources): ${Object.entries(s.online.rows).map(([k, n]) => `${k} ${num(n)}`).join(", ")}`) : null,
    s.online.error ? h("div", { class: "message error", role: "alert" }, `the online store could not be read: ${s.online.error}`) : null,
    s.online.rows && !s.online.complete ? h("p", { class: "muted" }, "online rows: at least these many (the count stops after 100,000 keys)") : null,
    h("h3", {}, "Freshness (last materialization)"),
    table(["online store", "materialized at (UTC)", "watermark per view (UTC)"], s.materialized.map((m) => [h("code", {}, m.online), ago(m.at),
      Object.entries(m.watermarks).map(([v, t]) => `${v} ${when(t)}`).join("; ")])),
    h("h3", {}, `Feature logging: ${num(s.logging.requests)} requests, ${num(s.logging.rows)} rows`), rate("logged requests", s.logging.per_hour)));
  const events = Object.entries(f.events);
  page("Features",
    f.stores.length ? null : h("p", { class: "message" }, "This home has no feature store: run the pipeline with features=feast (e.g. mlsys run features=feast)."),
    ...stores,
    h("section", { class: "card" }, h("h2", {}, "Events pushed (POST /v1/events)"),
      events.length ? events.map(([model, e]) => [h("p", {}, `${model}: ${num(e.events)} events`), rate(`${model} events`, e.per_hour)]) : h("p", { class: "muted" }, "none recorded")));
}

// -- routing ---------------------------------------------------------------------------------

const routes = [
  [/^#\/runs\/([^/]+)$/, runPage], [/^#\/diff\/([^/]+)\/([^/]+)$/, diffPage], [/^#\/data\/([^/]+)$/, dataPage],
  [/^#\/spans\/([^/]+)$/, (f) => spansPage(decodeURIComponent(f))], [/^#\/models(?:\/([^/]+))?$/, modelsPage],
  [/^#\/lineage\/([^/]+)\/([^/]+)$/, lineagePage], [/^#\/downstream\/(.+)$/, (u) => downstreamPage(decodeURIComponent(u))],
  [/^#\/monitoring(?:\/([^/]+))?$/, monitoringPage], [/^#\/features$/, featuresPage], [/^#\/tuning$/, studiesPage], [/^#\/tuning\/(.+)$/, (n) => studyPage(decodeURIComponent(n))], [/^#?\/?(?:runs)?$/, runsPage],
];

async function route() {
  if (!HOME) {
    try {
      HOME = await api("api/home");
    } catch (e) {  // the reads are private (ui.private_reads) and no token is typed yet, or the server is away
      page("Could not load the dashboard", h("div", { class: "message error", role: "alert" }, e.message));
      document.body.dataset.ready = location.hash || "#/runs";
      return;
    }
    const names = { mlflow: "MLflow", ray: "Ray dashboard", optuna: "Optuna" };
    document.getElementById("links").replaceChildren(...Object.entries(HOME.links).map(([k, v]) => h("a", { href: v, target: "_blank", rel: "noopener" }, `${names[k]} ↗`)));
  }
  const hash = location.hash || "#/runs";
  const section = hash.split("/")[1];
  for (const a of document.querySelectorAll("nav a[data-section]")) {
    const on = a.dataset.section === section || (a.dataset.section === "models" && ["lineage", "downstream"].includes(section)) || (a.dataset.section === "runs" && ["diff", "data", "spans"].includes(section));
    a.classList.toggle("active", on);
    on ? a.setAttribute("aria-current", "page") : a.removeAttribute("aria-current");
  }
  for (const [pattern, render] of routes) {
    const match = hash.match(pattern);
    if (match) {
      try { await render(...match.slice(1)); } catch (e) { page("Could not load this page", h("div", { class: "message error", role: "alert" }, e.message)); }
      await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));  // charts drawn too
      if (hash !== SHOWN) window.scrollTo(0, 0);  // a new page opens at its top; a redraw of this one stays put
      SHOWN = hash;
      document.body.dataset.readyMs = Math.round(performance.now());
      document.body.dataset.ready = hash;
      return;
    }
  }
  page("Not found", h("p", {}, `no page ${hash}; `, link("#/runs", "the runs")));
  document.body.dataset.ready = hash;
}
window.addEventListener("hashchange", route);
route();
