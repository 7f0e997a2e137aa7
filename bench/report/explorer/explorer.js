// The results explorer's behaviour (bench/report/html.py inlines it): sort and filter tables, show or hide a
// method's curves, show a heatmap's image and per-image quantities. No network, no libraries.
"use strict";

function cellKey(row, index) {
  const cell = row.cells[index];
  const value = cell.dataset.value;
  if (value !== undefined) {
    const number = parseFloat(value);
    return { number: Number.isFinite(number) ? number : null, text: "" };
  }
  return { number: null, text: cell.textContent.trim().toLowerCase() };
}

function compareKeys(a, b) {
  if (a.number !== null || b.number !== null) {  // numbers by value, NaN and empty last
    if (a.number === null) return b.number === null ? 0 : 1;
    if (b.number === null) return -1;
    return a.number - b.number;
  }
  return a.text.localeCompare(b.text, undefined, { numeric: true });
}

function sortTable(table, index, th) {
  const body = table.tBodies[0];
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  table.querySelectorAll("thead th").forEach((h) => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const rows = Array.from(body.rows).map((row, i) => ({ row, i, key: cellKey(row, index) }));
  rows.sort((x, y) => {
    const c = compareKeys(x.key, y.key);
    if (c === 0) return x.i - y.i;
    if (x.key.number === null && y.key.number !== null) return 1;   // missing values stay last either way
    if (y.key.number === null && x.key.number !== null) return -1;
    return ascending ? c : -c;
  });
  rows.forEach((r) => body.appendChild(r.row));
}

function applyFilters(block) {
  const table = block.querySelector("table");
  const selects = Array.from(block.querySelectorAll("select[data-filter]"));
  let shown = 0;
  Array.from(table.tBodies[0].rows).forEach((row) => {
    const keep = selects.every((s) => s.value === "" || row.dataset[s.dataset.filter] === s.value);
    row.hidden = !keep;
    if (keep) shown += 1;
  });
  const count = block.querySelector(".count");
  if (count) count.textContent = shown + " of " + table.tBodies[0].rows.length + " rows shown";
}

function setupTables() {
  document.querySelectorAll(".table-block").forEach((block) => {
    const table = block.querySelector("table");
    table.querySelectorAll("thead th").forEach((th, index) => {
      const button = th.querySelector("button.sort");
      if (button) button.addEventListener("click", () => sortTable(table, index, th));
    });
    block.querySelectorAll("select[data-filter]").forEach((s) => s.addEventListener("change", () => applyFilters(block)));
    applyFilters(block);
  });
}

function setupCurves() {
  document.querySelectorAll("input[data-curves]").forEach((box) => {
    box.addEventListener("change", () => {
      document.querySelectorAll("svg .bm-" + box.dataset.curves).forEach((el) => {
        el.style.display = box.checked ? "" : "none";
      });
    });
  });
}

function setupGallery() {
  document.querySelectorAll(".gallery-block").forEach((block) => {
    const detail = block.querySelector(".detail");
    block.querySelectorAll("button.cell").forEach((button) => {
      const lines = Object.entries(JSON.parse(button.dataset.q || "{}")).map(([k, v]) => k + ": " + v);
      button.title = button.dataset.label + " · " + button.dataset.image + "\n" + lines.join("\n");
      button.addEventListener("click", () => {
        block.querySelectorAll("button.cell").forEach((b) => b.setAttribute("aria-pressed", "false"));
        button.setAttribute("aria-pressed", "true");
        const quantities = JSON.parse(button.dataset.q || "{}");
        detail.replaceChildren();
        const heat = document.createElement("img");
        heat.src = button.querySelector("img").src;
        heat.alt = button.querySelector("img").alt;
        detail.appendChild(heat);
        const input = block.querySelector('img.input[data-image="' + CSS.escape(button.dataset.image) + '"]');
        if (input) {
          const copy = document.createElement("img");
          copy.src = input.src;
          copy.alt = input.alt;
          detail.appendChild(copy);
        }
        const table = document.createElement("table");
        const caption = document.createElement("caption");
        caption.textContent = button.dataset.label + " · " + button.dataset.image;
        table.appendChild(caption);
        Object.entries(quantities).forEach(([name, value]) => {
          const row = table.insertRow();
          const th = document.createElement("th");
          th.scope = "row";
          th.textContent = name;
          row.appendChild(th);
          const td = row.insertCell();
          td.className = "num";
          td.textContent = value;
        });
        detail.appendChild(table);
      });
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupTables();
  setupCurves();
  setupGallery();
});
