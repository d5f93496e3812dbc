// The landing page's behaviour: status refresh while vLLM loads, the try-it form, copy buttons.
// Same-origin requests only; the gateway's cookie authenticates them.
"use strict";

(function () {
  const body = document.body;
  const badge = document.getElementById("status");
  const submit = document.getElementById("try-submit");
  const labels = { ready: "ready", loading: "loading", down: "down", failed: "failed" };

  function describe(health) {
    let text = labels[health.status] || health.status;
    if (health.status === "loading" && health.phase) text += " (" + health.phase + ")";
    if (health.reason && health.status !== "ready") text += ": " + health.reason;
    if (health.status === "ready" && health.quality_check) text += " · quality check " + health.quality_check;
    return text;
  }

  function showStatus(health) {
    const previous = body.dataset.status;
    body.dataset.status = health.status;
    badge.className = "badge badge-" + health.status;
    badge.textContent = describe(health);
    submit.disabled = health.status !== "ready";
    if (previous !== "ready" && health.status === "ready") {
      // The plan and model facts may have been written while we waited: show them.
      window.location.reload();
    }
  }

  async function refresh() {
    try {
      const response = await fetch("/health", { cache: "no-store", credentials: "same-origin" });
      showStatus(await response.json());
    } catch (err) {
      badge.className = "badge badge-down";
      badge.textContent = "gateway unreachable";
    }
    if (body.dataset.status !== "ready") setTimeout(refresh, 2000);
  }

  submit.disabled = body.dataset.status !== "ready";
  if (body.dataset.status !== "ready") setTimeout(refresh, 2000);

  const form = document.getElementById("try-form");
  const errorBox = document.getElementById("try-error");
  const table = document.getElementById("try-results");
  const info = document.getElementById("try-info");

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    table.hidden = true;
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    errorBox.hidden = true;
    const query = document.getElementById("query").value.trim();
    const documents = document.getElementById("documents").value.split("\n")
      .map(function (line) { return line.trim(); }).filter(Boolean);
    if (!query || documents.length === 0) {
      showError("Enter a query and at least one document.");
      return;
    }
    const request = { model: body.dataset.model, query: query, documents: documents };
    const topN = parseInt(document.getElementById("top_n").value, 10);
    if (topN > 0) request.top_n = topN;
    submit.disabled = true;
    info.textContent = "ranking…";
    const started = performance.now();
    try {
      const response = await fetch("/v1/rerank", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
      const text = await response.text();
      let data;
      try { data = JSON.parse(text); } catch (e) { data = null; }
      if (!response.ok || !data || !Array.isArray(data.results)) {
        const message = data && (data.error && (data.error.message || data.error) || data.message || data.detail);
        showError("HTTP " + response.status + ": " + (typeof message === "string" ? message : text));
        info.textContent = "";
        return;
      }
      const tbody = table.querySelector("tbody");
      tbody.replaceChildren();
      data.results.forEach(function (result, rank) {
        const row = document.createElement("tr");
        const doc = result.document && result.document.text !== undefined ? result.document.text : documents[result.index];
        [String(rank + 1), String(result.index), result.relevance_score.toFixed(6), doc].forEach(function (value, column) {
          const cell = document.createElement("td");
          if (column === 2) cell.className = "score";
          cell.textContent = value;
          row.appendChild(cell);
        });
        tbody.appendChild(row);
      });
      table.hidden = false;
      info.textContent = Math.round(performance.now() - started) + " ms";
    } catch (err) {
      showError("Request failed: " + err);
      info.textContent = "";
    } finally {
      submit.disabled = body.dataset.status !== "ready";
    }
  });

  document.querySelectorAll("button.copy").forEach(function (button) {
    button.addEventListener("click", async function () {
      const text = button.parentElement.querySelector("code").textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (err) {
        const area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });
})();
