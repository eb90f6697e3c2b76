// The dashboard's live parts. Polls the calls API (the feed tbody's data-calls-url) for ids
// above data-after and prepends new calls to the raw feed; when calls arrived, fetches the
// results fragment (#results' data-results-url) the server renders for the page and swaps it
// in, so the results have one renderer. Loaded with the page's CSP nonce; the fragment holds
// no script and no style attribute, so it renders under the same policy.
(() => {
  "use strict";
  const body = document.getElementById("feed-body");
  const status = document.getElementById("feed-status");
  const count = document.getElementById("calls-count");
  const results = document.getElementById("results");
  const url = body.dataset.callsUrl;
  const resultsUrl = results.dataset.resultsUrl;
  const maxRows = Number(body.dataset.maxRows);  // as many as the server pre-renders
  const page = 200;
  let after = Number(body.dataset.after) || 0;
  let received = Number(count.textContent) || 0;
  let stale = false;  // calls arrived that the results on screen do not count yet
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
    const receivedAt = String(call.received_at || "");
    const time = cell(receivedAt.slice(11, 19));
    time.title = receivedAt;
    const detail = call.properties !== null && call.properties !== undefined
      ? call.properties : call.traits;
    tr.append(cell(String(call.id), "num"), time, cell(call.type || ""),
      cell(call.event || ""), cell(clip(call.anonymous_id), "code"),
      cell(clip(call.user_id), "code"), cell(clip(call.message_id), "code"),
      cell(short(detail), "props"));
    body.prepend(tr);
  };
  const refreshResults = async () => {
    const response = await fetch(resultsUrl, {cache: "no-store"});
    if (!response.ok) throw new Error(String(response.status));
    // Server-rendered and escaped there: the same HTML the page was built with.
    results.innerHTML = await response.text();
  };
  const poll = async () => {
    let full = false;
    try {
      const response = await fetch(`${url}?after=${after}&limit=${page}`, {cache: "no-store"});
      if (!response.ok) throw new Error(String(response.status));
      const calls = await response.json();
      if (calls.length) {
        const placeholder = document.getElementById("feed-empty");
        if (placeholder) placeholder.remove();
        stale = true;
      }
      for (const call of calls) {
        add(call);
        after = Math.max(after, Number(call.id) || 0);
      }
      while (body.rows.length > maxRows) body.deleteRow(body.rows.length - 1);
      received += calls.length;
      count.textContent = String(received);
      full = calls.length >= page;
      // Once the feed has caught up: one fragment for a burst of calls, not one per page.
      if (stale && !full) {
        await refreshResults();
        stale = false;
      }
      status.textContent = "live";
    } catch (error) {
      status.textContent = "offline, retrying\u2026";
    }
    setTimeout(poll, full ? 0 : 1000);
  };
  poll();
})();
