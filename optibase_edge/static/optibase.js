/* optibase-edge client: exposes the assigned variants, reports conversions. */
(function () {
  "use strict";
  // Read now: currentScript is only set while this script is executing.
  const tag = document.currentScript;
  // A second copy of the tag must not double-count clicks.
  if (window.__optibaseEdge) return;
  window.__optibaseEdge = true;

  let config;
  try {
    config = __OPTIBASE_CONFIG__;
  } catch (e) {
    config = null; // file served without substitution: fall back to defaults
  }
  config = config || {};
  const collectUrl = config.collectUrl || "/_optibase/collect";
  const clicks = Array.isArray(config.clicks) ? config.clicks : [];

  let known = null; // active variants, Optibase's shape, once known
  let pending = [];

  function call(cb) {
    try {
      cb(known);
    } catch (e) {
      // A faulty page listener must not stop the others.
    }
  }

  function publish(visitor, list) {
    if (known) return;
    known = (Array.isArray(list) ? list : [])
      .filter((v) => v && typeof v.test_id === "string" && typeof v.variant_id === "string")
      .map((v) => ({ userFriendlyTestId: v.test_id, userFriendlyVariantId: v.variant_id }));
    if (typeof visitor === "string" && visitor) window.optibaseTestedUserId = visitor;
    window.optibaseActiveVariants = known;
    const queued = pending;
    pending = null;
    queued.forEach(call);
  }

  window.optibaseAddActiveVariantsListener = function (cb) {
    if (typeof cb !== "function") return;
    // Always asynchronous, so callers see the same ordering either way.
    if (known) setTimeout(() => call(cb), 0);
    else pending.push(cb);
  };

  function send(type, id) {
    if (id == null || id === "") return;
    try {
      const json = JSON.stringify({
        type: type, conversion_id: String(id), url: location.href, referrer: document.referrer,
      });
      // sendBeacon survives the page unloading, e.g. a click on a link.
      try {
        if (navigator.sendBeacon &&
            navigator.sendBeacon(collectUrl, new Blob([json], { type: "application/json" }))) return;
      } catch (e) { /* fall through to fetch */ }
      if (window.fetch) {
        fetch(collectUrl, {
          method: "POST", keepalive: true, credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, body: json,
        }).catch(() => {});
      }
    } catch (e) { /* never throw into the page */ }
  }

  window.optibaseSendConversionEvent = (id) => send("conversion", id);

  // Delegation on document (capture phase) sees clicks on elements added
  // later and clicks whose handlers stop propagation.
  document.addEventListener("click", (event) => {
    try {
      let node = event.target;
      if (node && node.nodeType !== 1) node = node.parentElement; // text node
      if (!node || !node.closest) return;
      const ids = new Set();
      clicks.forEach((c) => {
        try {
          if (c && c.id && c.selector && node.closest(c.selector)) ids.add(String(c.id));
        } catch (e) { /* invalid selector: skip just this one */ }
      });
      const marked = node.closest("[data-optibase-conversion-id]");
      if (marked) ids.add(marked.getAttribute("data-optibase-conversion-id"));
      ids.forEach((id) => send("click", id));
    } catch (e) { /* never throw into the page */ }
  }, true);

  // Variants come inline from the middleware; a hand-added tag has to ask.
  let inline = null;
  try {
    const raw = tag && tag.getAttribute("data-optibase-variants");
    if (raw) inline = JSON.parse(raw);
  } catch (e) {
    inline = null;
  }
  if (Array.isArray(inline)) {
    publish(tag.getAttribute("data-optibase-visitor"), inline);
  } else if (window.fetch && config.variantsUrl) {
    fetch(config.variantsUrl, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((d) => publish(d && d.visitor_id, d && d.variants))
      // Resolve with no variants so pages waiting on listeners do not hang.
      .catch(() => publish(null, []));
  } else {
    publish(null, []);
  }
})();
