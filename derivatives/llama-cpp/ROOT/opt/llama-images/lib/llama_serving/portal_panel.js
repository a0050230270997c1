// llama-server's panels on the Instance Portal (portal_part.py): the model and "Use it". Loaded by
// the portal's page after its own portal.js, whose helpers it uses (api, post, el, say, number,
// replaceIfChanged) and whose loop calls it (registerPart); the service's name comes from the
// declaration, in this script tag's data-service.
"use strict";

(() => {
  const service = document.currentScript.dataset.service;
  const PANELS = `
<section class="panel" id="model" hidden>
  <h2>Model</h2>
  <p id="model-status"></p>
  <p id="model-served" class="muted"></p>
  <p id="model-download" hidden><progress id="model-progress" max="100"></progress> <span id="model-progress-text"></span></p>
  <table id="models">
    <thead><tr><th>Model</th><th>State</th><th>Context</th><th>Slots busy</th><th>Prompt tok/s</th><th>Generation tok/s</th><th>Tokens generated</th><th>Requests now / waiting</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
  <p class="muted" id="model-notes"></p>
  <p class="message" id="model-message" role="status"></p>
</section>

<section class="panel" id="use" hidden>
  <h2>Use it</h2>
  <p>API: <code id="use-base"></code> · <a id="use-chat" target="_blank" rel="noopener">llama-server's chat page</a></p>
  <p class="muted" id="use-hint"></p>
  <p class="muted" id="use-port-note" hidden></p>
  <div class="snippet"><div class="snippet-head">curl <button type="button" data-copy="use-curl">copy</button></div><pre id="use-curl"></pre></div>
  <div class="snippet"><div class="snippet-head">Python (openai) <button type="button" data-copy="use-python">copy</button></div><pre id="use-python"></pre></div>
</section>`;

  async function modelAction(model, action) {
    say("model-message", `${action} ${model}…`);
    try {
      const result = await post(`/api/model/${action}`, { model });
      say("model-message", `${action} ${model}: ${result.result || "done"}`);
    } catch (error) {
      say("model-message", `${action} ${model} failed: ${error.message}`, true);
    }
    refreshModel();
  }

  async function refreshModel() {
    const data = await api("/api/model");
    $("model").hidden = !data.available;
    if (!data.available) return;
    const status = data.status || "";
    say("model-status", `${data.state}${status ? ": " + status : ""}`, status.startsWith("failed"));
    $("model-served").textContent = data.requests_served === null || data.requests_served === undefined
      ? "" : `${data.requests_served} request${data.requests_served === 1 ? "" : "s"} served since llama-server started`;
    $("model-download").hidden = !data.progress;
    if (data.progress) {
      $("model-progress").value = data.progress.percent;
      $("model-progress-text").textContent =
        `${data.progress.file}: ${data.progress.percent}%${data.progress.detail ? " " + data.progress.detail : ""}`;
    }
    const rows = data.models.map((m) => {
      const figures = m.figures || {};
      const buttons = el("td", {});
      for (const action of m.actions || []) {
        buttons.append(el("button", { type: "button", "data-model": m.id, "data-model-action": action,
          onclick: () => modelAction(m.id, action) }, action));
      }
      const slots = figures.slots ? `${figures.slots.busy} / ${figures.slots.total}` : "—";
      return el("tr", { "data-model": m.id, "data-state": m.state },
        el("td", {}, m.id),
        el("td", { class: `state ${m.state}` }, m.state),
        el("td", {}, number(figures.context)),
        el("td", {}, slots),
        el("td", { "data-metric": "prompt" }, number(figures.prompt_tokens_per_second, 1)),
        el("td", { "data-metric": "generation" }, number(figures.generation_tokens_per_second, 1)),
        el("td", { "data-metric": "generated" }, number(figures.generated_tokens)),
        el("td", { "data-metric": "requests" },
          `${number(figures.requests_processing)} / ${number(figures.requests_deferred)}`),
        buttons);
    });
    replaceIfChanged($("models").tBodies[0], rows);
    $("model-notes").textContent = (data.notes || []).join(" ");
  }

  async function loadUsage() {
    const data = await api("/api/usage");
    $("use").hidden = !data.available;
    if (!data.available) return;
    $("use-base").textContent = data.base_url;
    $("use-chat").href = data.chat_url;
    $("use-hint").textContent = data.token_hint;
    $("use-port-note").hidden = !data.port_note;
    $("use-port-note").textContent = data.port_note || "";
    $("use-curl").textContent = data.curl;
    $("use-python").textContent = data.python;
  }

  registerPart({ service, html: PANELS, refresh: refreshModel, start: loadUsage });
})();
