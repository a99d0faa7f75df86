// Live feed: segment entered/exited events and chat assignments as they happen, from the worker's
// server-sent event stream. EventSource cannot send the Authorization header, so the stream is read with
// fetch() and a ReadableStream; a dropped connection is retried, and leaving the view closes it.
import { get, session, ws } from "./api.js";
import { busy, fill, h } from "./ui.js";

const MAX_ROWS = 200;
const RETRY_MS = [1000, 2000, 5000, 10000];
const CAUSES = {
  change: "the record changed", delete: "the record was deleted", backfill: "the segment was created or edited",
  import: "an import", event: "a behavioural event", time: "time passed",
};
const REASONS = { no_rule_matched: "no rule matched", unknown_contact: "the contact is not known yet" };

export async function render(root) {
  const segments = await busy("Loading the segments", get(ws("/segments")).then((r) => r.segments));
  const byId = new Map(segments.map((s) => [s.id, s]));
  const chosen = new Set();
  const show = { entered: true, exited: true, assignments: true };
  const events = [];
  let controller = null;
  let retryTimer = null;
  let attempts = 0;
  let stopped = false;

  const stateLine = h("span", { id: "feed-state", class: "state", role: "status" }, "Connecting…");
  const stateNote = h("span", { class: "muted small" });
  const body = h("tbody", {});
  const empty = h("p", { class: "muted", id: "feed-empty" }, "Waiting for events: they appear here the moment they happen.");

  function setState(kind, text, note = "") {
    stateLine.className = `state ${kind}`;
    stateLine.dataset.state = kind;
    stateLine.textContent = text;
    stateNote.textContent = note;
  }

  function segmentCell(id) {
    if (!id) return "—";
    const seg = byId.get(id);
    return h("a", { href: `#/segment/${encodeURIComponent(id)}` }, seg ? seg.name : id);
  }

  function recordCell(type, id) {
    return id ? h("a", { href: `#/record/${type}/${encodeURIComponent(id)}` }, id) : "—";
  }

  function row(event) {
    const d = event.data || {};
    const time = h("td", { class: "time", title: event.time }, event.time ? new Date(event.time).toLocaleTimeString() : "—");
    switch (event.type) {
      case "segment.entered":
      case "segment.exited": {
        const entered = event.type === "segment.entered";
        return h("tr", { class: `feed-row ${entered ? "entered" : "exited"}`, dataset: { segment: d.segment_id, record: d.record_id } }, time,
          h("td", {}, h("span", { class: `badge ${entered ? "in" : "out"}` }, entered ? "entered" : "exited")),
          h("td", {}, segmentCell(d.segment_id)), h("td", {}, recordCell(d.object_type, d.record_id)),
          h("td", { class: "muted" }, `because ${CAUSES[d.cause] || d.cause || "—"}`));
      }
      case "segment.deleted":
        return h("tr", { class: "feed-row deleted", dataset: { segment: d.segment_id } }, time,
          h("td", {}, h("span", { class: "badge" }, "segment deleted")), h("td", {}, segmentCell(d.segment_id)), h("td", {}, "—"),
          h("td", { class: "muted" }, "its members were released; no record was touched"));
      case "conversation.assigned":
      case "conversation.unassigned": {
        const assigned = event.type === "conversation.assigned";
        return h("tr", { class: `feed-row ${assigned ? "assigned" : "unassigned"}`, dataset: { record: d.contact_id, conversation: d.conversation_id } }, time,
          h("td", {}, h("span", { class: `badge ${assigned ? "assigned" : ""}` }, assigned ? "chat assigned" : "chat unassigned")),
          h("td", {}, segmentCell(d.segment_id)), h("td", {}, recordCell("contact", d.contact_id)),
          h("td", { class: "assignee" }, assigned ? `to ${d.assignee}${d.group ? ` (group ${d.group})` : ""}` : REASONS[d.reason] || d.reason || ""));
      }
      default:
        return null;
    }
  }

  function visible(event) {
    if (event.type === "segment.entered") return show.entered;
    if (event.type === "segment.exited") return show.exited;
    if (event.type.startsWith("conversation.")) return show.assignments;
    return true;
  }

  function draw() {
    const rows = events.filter(visible).map(row).filter(Boolean);
    fill(body, rows);
    empty.hidden = rows.length > 0;
  }

  function add(event) {
    events.unshift(event);
    if (events.length > MAX_ROWS) events.length = MAX_ROWS;
    if (!visible(event)) return;
    const tr = row(event);
    if (!tr) return;
    body.prepend(tr);
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
    empty.hidden = true;
  }

  /** One server-sent event block: its `data:` lines joined; comments (`: keepalive`) carry none. An
   * `overflow` event means this browser fell too far behind: the worker closes, and we reconnect. */
  function handleBlock(block) {
    const lines = block.split(/\r?\n/);
    const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
    if (!data) return;
    if (lines.some((l) => /^event:\s*overflow/.test(l))) { stateNote.textContent = "Too many events at once: some were skipped."; return; }
    try {
      const event = JSON.parse(data);
      if (typeof event.type === "string") add(event);
    } catch (err) { /* a line we do not understand is skipped, the feed goes on */ }
  }

  function retry(reason) {
    if (stopped) return;
    const delay = RETRY_MS[Math.min(attempts, RETRY_MS.length - 1)];
    attempts += 1;
    setState("waiting", `Reconnecting in ${Math.round(delay / 1000)} s…`, `${reason} Events in the gap are not shown.`);
    retryTimer = setTimeout(connect, delay);
  }

  async function connect() {
    if (stopped) return;
    controller?.abort();
    controller = new AbortController();
    const mine = controller;
    setState("waiting", "Connecting…");
    const query = [...chosen].map((id) => `segment_id=${encodeURIComponent(id)}`).join("&");
    let response;
    try {
      response = await fetch(ws(`/events/stream${query ? `?${query}` : ""}`), {
        headers: { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" }, signal: mine.signal, cache: "no-store" });
    } catch (err) {
      if (mine.signal.aborted) return;
      retry("The worker cannot be reached.");
      return;
    }
    if (!response.ok) {
      let message = `The worker answered ${response.status}.`;
      try { message = (await response.json()).error.message || message; } catch (err) { /* not JSON */ }
      if (response.status === 401) { setState("down", "Stopped", "That token was not accepted: sign in again."); return; }
      if ((response.status === 404 && chosen.size) || response.status === 400) {
        setState("down", "Stopped", `${message} Change the chosen segments to continue.`);
        return;
      }
      if (response.status === 404 || response.status === 405) {
        setState("down", "Not available", "The live feed needs a newer worker (GET /v1/workspaces/{ws}/events/stream).");
        return;
      }
      retry(message);
      return;
    }
    setState("live", "Live", chosen.size ? `Showing ${chosen.size} chosen segment${chosen.size === 1 ? "" : "s"} and chat assignments.` : "Showing every segment you can see and chat assignments.");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        attempts = 0;
        buffer += decoder.decode(value, { stream: true });
        const blocks = buffer.split(/\r?\n\r?\n/);
        buffer = blocks.pop();
        blocks.forEach(handleBlock);
      }
    } catch (err) {
      if (mine.signal.aborted) return;
    }
    if (!mine.signal.aborted) retry("The connection dropped.");
  }

  function reconnect() {
    clearTimeout(retryTimer);
    attempts = 0;
    connect();
  }

  const segmentBoxes = segments.map((s) => h("label", { class: "inline" },
    h("input", { type: "checkbox", value: s.id, onchange: (e) => { if (e.target.checked) chosen.add(s.id); else chosen.delete(s.id); reconnect(); } }),
    ` ${s.name} `, h("span", { class: "muted small" }, `(${s.object_type})`)));
  const toggle = (key, label) => h("label", { class: "inline" },
    h("input", { type: "checkbox", class: `show-${key}`, checked: show[key], onchange: (e) => { show[key] = e.target.checked; draw(); } }), ` ${label}`);

  fill(root,
    h("h1", {}, "Live feed"),
    h("div", { class: "toolbar" }, stateLine, stateNote),
    h("section", { class: "panel" },
      h("div", { class: "grid2" },
        h("div", { class: "field" }, h("span", { class: "label", id: "feed-segments-label" }, "Segments (none chosen: all)"),
          h("div", { class: "feed-filter", role: "group", "aria-labelledby": "feed-segments-label" },
            segmentBoxes.length ? segmentBoxes : h("span", { class: "muted" }, "No segments yet."))),
        h("div", { class: "field" }, h("span", { class: "label", id: "feed-show-label" }, "Show"),
          h("div", { role: "group", "aria-labelledby": "feed-show-label" },
            toggle("entered", "entered"), toggle("exited", "exited"), toggle("assignments", "chat assignments")),
          h("small", {}, `Newest first; the last ${MAX_ROWS} events are kept.`),
          h("div", {}, h("button", { type: "button", class: "clear", onclick: () => { events.length = 0; draw(); } }, "Clear"))))),
    h("table", { id: "feed" },
      h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "What"), h("th", {}, "Segment"), h("th", {}, "Record"), h("th", {}, "Why"))),
      body),
    empty);
  connect();

  return () => {
    stopped = true;
    clearTimeout(retryTimer);
    controller?.abort();
  };
}
