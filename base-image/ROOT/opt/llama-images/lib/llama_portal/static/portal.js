// The Instance Portal's page: reads the JSON API (docs/image.md, "Instance Portal") and draws it.
// No inline handlers, no external resources; graphs are inline SVG drawn here.
"use strict";

const REFRESH_MS = 2000;
const BOOT_REFRESH_MS = 6000;
const WINDOW_S = 300; // graphs show the last five minutes...
const MIN_WINDOW_S = 60; // ...or, while fewer are known, at least the last minute
const SVG = "http://www.w3.org/2000/svg";
let logService = null;
let machineSince = 0;
let machineHistory = [];
let lastBoot = 0;
let ticking = false;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = {};
  try { body = await response.json(); } catch (error) { body = {}; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
}

function bytes(value) {
  if (value === null || value === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let index = 0;
  while (value >= 1024 && index < units.length - 1) { value /= 1024; index += 1; }
  return `${value.toFixed(value >= 100 || index === 0 ? 0 : 1)} ${units[index]}`;
}

function number(value, digits) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits || 0);
}

function say(id, text, failed) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("failed", Boolean(failed));
}

// ---- graphs ----------------------------------------------------------------------------------

// A line over the last seconds: `values` are [time, value|null], oldest first; a gap breaks the line.
function graph(values, max, kind) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 300 40");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", `graph ${kind || ""}`);
  const now = Date.now() / 1000;
  const known = values.length ? now - values[0][0] : 0;
  const span = Math.min(WINDOW_S, Math.max(MIN_WINDOW_S, known));
  let path = "";
  let previous = null;
  let drawn = 0;
  for (const [time, value] of values) {
    if (value === null || value === undefined || !max) { previous = null; continue; }
    const x = 300 - ((now - time) / span) * 300;
    const y = 40 - Math.min(1, Math.max(0, value / max)) * 38 - 1;
    const joined = previous !== null && time - previous < 3 * (REFRESH_MS / 1000) + 1;
    path += `${joined ? "L" : "M"}${x.toFixed(1)} ${y.toFixed(1)}`;
    previous = time;
    drawn += 1;
  }
  const line = document.createElementNS(SVG, "path");
  line.setAttribute("d", path || "M0 39");
  svg.append(line);
  svg.dataset.points = String(drawn);
  return svg;
}

function card(key, label, value, detail, graphs, numeric) {
  return el("div", { class: "card", "data-figure": key, "data-value": numeric },
    el("div", { class: "card-label" }, label),
    el("div", { class: "card-value" }, value),
    el("div", { class: "card-detail muted" }, detail),
    ...graphs);
}

// ---- machine ---------------------------------------------------------------------------------

async function refreshMachine() {
  const data = await api(`/api/machine?since=${machineSince}`);
  machineHistory = machineHistory.concat(data.history).filter((p) => p.t > Date.now() / 1000 - WINDOW_S);
  if (data.history.length) machineSince = data.history[data.history.length - 1].t;
  const series = (pick) => machineHistory.map((p) => [p.t, pick(p)]);
  const cards = [];
  const cpu = data.cpu;
  cards.push(card("cpu", "CPU", cpu.percent === null ? "—" : `${number(cpu.percent)}%`,
    `of ${number(cpu.cores, cpu.cores % 1 ? 1 : 0)} cores (${cpu.source})`, [graph(series((p) => p.cpu), 100)], cpu.percent));
  if (data.memory) {
    const m = data.memory;
    cards.push(card("memory", "Memory", `${bytes(m.used)} / ${bytes(m.total)}`,
      m.limited ? `container limit (${m.source})` : `no container limit: the host's memory`,
      [graph(series((p) => p.memory), m.total)], m.used));
  }
  if (data.disk) {
    const d = data.disk;
    cards.push(card("disk", d.path, `${bytes(d.used)} used, ${bytes(d.free)} free`,
      `of ${bytes(d.total)}${d.own_volume ? "" : " (not a separate volume: the container's own disk)"}`,
      [graph(series((p) => p.disk), d.total)], d.used));
  }
  data.gpus.forEach((gpu, index) => {
    const parts = [`${bytes(gpu.memory_used)} / ${bytes(gpu.memory_total)}`];
    if (gpu.temperature !== null) parts.push(`${number(gpu.temperature)} °C`);
    if (gpu.power !== null) parts.push(`${number(gpu.power)} W${gpu.power_limit ? ` / ${number(gpu.power_limit)} W` : ""}`);
    cards.push(card(`gpu-${index}`, `GPU ${gpu.index}: ${gpu.name}`,
      gpu.utilization === null ? "— busy" : `${number(gpu.utilization)}% busy`, parts.join(" · "),
      [graph(series((p) => (p.gpus[index] || [])[0]), 100),
        graph(series((p) => (p.gpus[index] || [])[1]), gpu.memory_total, "memory")], gpu.utilization));
  });
  $("machine-cards").replaceChildren(...cards);
  $("gpu-note").textContent = data.gpus.length ? data.gpu_note : `GPU: ${data.gpu_note || "none"}`;
}

// Redraws a table body only when its rows changed: a button under the pointer stays put.
function replaceIfChanged(body, rows) {
  const html = rows.map((r) => r.outerHTML).join("");
  if (body.dataset.drawn === html) return;
  body.dataset.drawn = html;
  body.replaceChildren(...rows);
}

// ---- parts: panels an image adds for its services (llama_portal/parts.py) --------------------

// A part's script (loaded after this one) registers its panels: `html` drawn in #parts, `refresh`
// called on every tick, `start` once when the page is ready.
const PARTS = [];

function registerPart(part) {
  $("parts").insertAdjacentHTML("beforeend", part.html || "");
  PARTS.push(part);
}

function copy(event) {
  const target = $(event.target.dataset.copy);
  const done = () => { event.target.textContent = "copied"; setTimeout(() => { event.target.textContent = "copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(target.textContent).then(done);
    return;
  }
  // Plain http (most rented machines): the Clipboard API is not offered; copy the selection.
  const range = document.createRange();
  range.selectNodeContents(target);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  if (document.execCommand("copy")) done();
}

// ---- services --------------------------------------------------------------------------------

function link(service) {
  const url = new URL(location.href);
  url.port = String(service.external_port);
  url.pathname = service.path;
  url.search = service.link_query || ""; // a service's own token, where the proxy leaves its port open
  url.hash = "";
  return url.toString();
}

async function act(name, action) {
  say("message", `${action} ${name}…`);
  try {
    const result = await post(`/api/services/${name}/${action}`);
    say("message", `${action} ${name}: now ${result.state}`);
  } catch (error) {
    say("message", `${action} ${name} failed: ${error.message}`, true);
  }
  refreshServices();
}

async function refreshServices() {
  const data = await api("/api/services");
  $("logout-form").hidden = !data.logout;
  if (data.logout) $("logout-form").action = data.logout;
  $("supervisor").textContent =
    `Proxy: ${data.proxy.state}` + (data.problems.length ? ` — declaration problems: ${data.problems.join("; ")}` : "");
  const rows = data.services.map((s) => {
    const buttons = el("td", {});
    if (s.controllable) {
      const allowed = s.actions || [];
      for (const action of ["start", "stop", "restart"]) {
        buttons.append(el("button", { type: "button", "data-action": action, "data-service": s.name,
          disabled: !allowed.includes(action), onclick: () => act(s.name, action) }, action));
      }
    }
    if (s.has_log) {
      buttons.append(el("button", { type: "button", class: "log", "data-log": s.name,
        onclick: () => { logService = s.name; tailLog(); } }, "log"));
    }
    const name = s.enabled ? el("a", { href: link(s), target: "_blank", rel: "noopener" }, s.label) : s.label;
    return el("tr", { "data-service": s.name },
      el("td", {}, name),
      el("td", {}, `${s.external_port} → ${s.internal_port}`),
      el("td", { class: `state ${s.state}`, "data-state": s.state }, s.state),
      el("td", { class: s.status && s.status.startsWith("failed") ? "failed" : "" }, s.status || s.description || ""),
      buttons);
  });
  replaceIfChanged(document.querySelector("#services tbody"), rows);
  if (!logService) {
    // The log of a service with a panel of its own first: the service the page is about.
    const first = data.services.find((s) => s.has_log && PARTS.some((p) => p.service === s.name))
      || data.services.find((s) => s.has_log);
    if (first) { logService = first.name; tailLog(); }
  }
}

async function refreshBoot() {
  const boot = await api("/api/boot");
  const steps = boot.steps.map((step) => el("li", { class: step.ok ? "" : "failed" },
    `${step.step}: ${step.ok ? "ok" : "FAILED (exit " + step.exit_status + ")"}`));
  const failed = (text) => ((text || "").startsWith("failed") ? "failed" : "");
  $("boot").replaceChildren(
    el("ul", {}, ...steps),
    el("p", { id: "packages", class: failed(boot.packages) }, `Packages: ${boot.packages || "—"}`),
    el("p", { id: "provisioning", class: failed(boot.provisioning) }, `Provisioning: ${boot.provisioning || "—"}`),
    boot.provisioning_log ? el("pre", { class: "log" }, boot.provisioning_log) : "");
}

async function refreshLockouts() {
  const data = await api("/api/lockouts");
  const rows = data.lockouts.map((entry) => el("li", { "data-address": entry.address },
    `${new Date(entry.started * 1000).toLocaleString()}: ${entry.address}, ${entry.failures} failed attempts` +
    `${entry.port ? ` (last on port ${entry.port})` : ""}, refused until ${new Date(entry.until * 1000).toLocaleTimeString()}`));
  const empty = data.hidden ? `Lock-outs ${data.hidden}.` : "None recorded.";
  $("lockouts").replaceChildren(rows.length ? el("ul", {}, ...rows) : el("p", { class: "muted" }, empty));
}

async function tailLog() {
  if (!logService) return;
  const data = await api(`/api/services/${logService}/log`);
  $("log-name").textContent = logService;
  const pre = $("log");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const text = data.text || data.note || "";
  if (pre.textContent !== text) pre.textContent = text;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ---- the loop --------------------------------------------------------------------------------

async function tick() {
  if (document.hidden || ticking) return; // a tab in the background costs the machine nothing
  ticking = true;
  const jobs = [refreshServices(), refreshMachine(), ...PARTS.map((part) => part.refresh()), tailLog()];
  if (Date.now() - lastBoot > BOOT_REFRESH_MS) { lastBoot = Date.now(); jobs.push(refreshBoot(), refreshLockouts()); }
  const results = await Promise.allSettled(jobs);
  ticking = false;
  const failure = results.find((r) => r.status === "rejected");
  document.body.classList.toggle("stale", Boolean(failure));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) button.addEventListener("click", copy);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) tick(); });
  for (const part of PARTS) if (part.start) part.start().catch(() => {});
  tick();
  setInterval(tick, REFRESH_MS);
});
