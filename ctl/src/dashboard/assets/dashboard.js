// shoalctl dashboard: embedded in the binary. Only same-origin requests; values are put
// into the page as text (textContent), never as HTML.
"use strict";

// The printed URL carries the token; the first answer set the cookie, so take the token
// out of the address bar and the history.
if (new URLSearchParams(location.search).has("token")) {
  const u = new URL(location.href);
  u.searchParams.delete("token");
  history.replaceState(null, "", u.pathname + u.search + u.hash);
}

// The namespace picker applies on change.
const picker = document.getElementById("namespace");
if (picker) {
  picker.addEventListener("change", () => picker.form.submit());
}

// Tables with data-live: rebuilt every 2 s from their JSON endpoint
// ({headers, rows: [{cells, logs}]}; the name column links to the pod's logs).
for (const table of document.querySelectorAll("table[data-live]")) {
  const url = table.dataset.live;
  const nameColumn = Number(table.dataset.nameColumn || 0);
  const stamp = document.getElementById("refreshed");
  let refreshes = 0;
  const refresh = async () => {
    try {
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      const data = await resp.json();
      const body = document.createElement("tbody");
      for (const row of data.rows) {
        const tr = document.createElement("tr");
        row.cells.forEach((cell, i) => {
          const td = document.createElement("td");
          if (i === nameColumn && row.logs) {
            const a = document.createElement("a");
            a.href = row.logs;
            a.textContent = cell;
            td.appendChild(a);
          } else {
            td.textContent = cell;
          }
          tr.appendChild(td);
        });
        body.appendChild(tr);
      }
      table.replaceChild(body, table.tBodies[0]);
      const empty = table.nextElementSibling;
      if (empty && empty.classList.contains("empty")) empty.hidden = data.rows.length > 0;
      refreshes += 1;
      table.dataset.refreshes = String(refreshes);
      if (stamp) stamp.textContent = "(updated " + new Date().toLocaleTimeString() + ")";
    } catch (e) {
      if (stamp) stamp.textContent = "(refresh failed: " + e.message + ")";
    }
  };
  setInterval(refresh, 2000);
}
