// The dashboard's live feed: polls the calls API (the tbody's data-calls-url) for ids above
// data-after, prepends new calls, and offers a reload when A/B events arrive, since the
// results tables are rendered on the server. Loaded with the page's CSP nonce.
(() => {
  "use strict";
  const body = document.getElementById("feed-body");
  const status = document.getElementById("feed-status");
  const notice = document.getElementById("results-notice");
  const url = body.dataset.callsUrl;
  const maxRows = 50;  // as many as the server pre-renders (FEED_ROWS in dashboard.py)
  let after = Number(body.dataset.after) || 0;
  const cell = (text, cls) => {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    const inner = cls === "code" || cls === "props" ? document.createElement("code") : td;
    inner.textContent = text;
    if (inner !== td) td.appendChild(inner);
    return td;
  };
  const short = (value) => {
    if (value === null || value === undefined) return "";
    const text = JSON.stringify(value);
    return text.length > 120 ? text.slice(0, 119) + "\u2026" : text;
  };
  const clip = (text) => {
    const s = text === null || text === undefined ? "" : String(text);
    return s.length > 40 ? s.slice(0, 39) + "\u2026" : s;
  };
  const add = (call) => {
    const tr = document.createElement("tr");
    if (call.duplicate) tr.className = "dup";
    const received = String(call.received_at || "");
    const time = cell(received.slice(11, 19));
    time.title = received;
    const detail = call.properties !== null && call.properties !== undefined
      ? call.properties : call.traits;
    tr.append(cell(String(call.id), "num"), time, cell(call.type || ""),
      cell(call.event || ""), cell(clip(call.anonymous_id), "code"),
      cell(clip(call.user_id), "code"), cell(clip(call.message_id), "code"),
      cell(short(detail), "props"));
    body.prepend(tr);
  };
  const poll = async () => {
    let full = false;
    try {
      const response = await fetch(`${url}?after=${after}&limit=200`, {cache: "no-store"});
      if (!response.ok) throw new Error(String(response.status));
      const calls = await response.json();
      if (calls.length) {
        const placeholder = document.getElementById("feed-empty");
        if (placeholder) placeholder.remove();
      }
      for (const call of calls) {
        add(call);
        after = Math.max(after, Number(call.id) || 0);
        if (call.type === "track" && (call.event === "Experiment Viewed"
            || call.event === "Conversion Triggered")) notice.hidden = false;
      }
      while (body.rows.length > maxRows) body.deleteRow(body.rows.length - 1);
      full = calls.length >= 200;
      status.textContent = "live";
    } catch (error) {
      status.textContent = "offline, retrying\u2026";
    }
    setTimeout(poll, full ? 0 : 1000);
  };
  poll();
})();
