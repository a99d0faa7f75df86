// Record profile: look a record up by type and id; its fields as the engine stores them, the segments it
// is in (cached membership, kept current by the stream) and "current results": every active rule-based
// segment evaluated now against the stored fields.
import { get, ws } from "./api.js";
import { OBJECT_TYPES, attempt, field, fill, formatCount, go, h } from "./ui.js";
import { TYPE_LABELS } from "./view-segments.js";
import { fieldCatalog, formatValue } from "./view-segment.js";
import { fieldLabel } from "./words.js";

export async function render(root, params) {
  const objectType = OBJECT_TYPES.includes(params[0]) ? params[0] : "contact";
  const recordId = params[1] || "";

  const typeSelect = h("select", { id: "record-type" }, OBJECT_TYPES.map((t) =>
    h("option", { value: t, selected: t === objectType }, TYPE_LABELS[t].replace(/ies$/, "y").replace(/s$/, ""))));
  const idInput = h("input", { id: "record-id", type: "text", value: recordId, placeholder: "e.g. c42", required: true, autocomplete: "off" });
  const lookup = h("form", { class: "toolbar panel", onsubmit: (e) => { e.preventDefault(); if (idInput.value.trim()) go("record", typeSelect.value, idInput.value.trim()); } },
    field("Object type", typeSelect), h("div", { class: "field grow" }, h("label", { for: "record-id" }, "Record id"), idInput),
    h("div", { class: "field buttons" }, h("span", { class: "label" }, " "), h("button", { type: "submit", class: "primary" }, "Look up")));
  const body = h("div", { id: "record-body" });
  fill(root, h("h1", {}, recordId ? `${TYPE_LABELS[objectType].replace(/ies$/, "y").replace(/s$/, "")} ${recordId}` : "Records"), lookup, body);
  if (!recordId) {
    fill(body, h("p", { class: "muted" }, "Enter a record id to see its fields, the segments it is in and its current results."));
    idInput.focus();
    return;
  }

  const path = `/records/${objectType}/${encodeURIComponent(recordId)}`;
  const profile = await attempt("Loading the record", () => get(ws(path)).catch((err) => {
    if (err.code === "not_found") err.userMessage = `The engine knows no ${objectType} with the id “${recordId}” in this workspace.`;
    throw err;
  }));
  if (!profile) { fill(body, h("p", { class: "muted" }, "Nothing to show.")); return; }
  const catalog = await fieldCatalog(objectType).catch(() => null);

  const names = Object.keys(profile.fields);
  const order = catalog ? [...catalog.fields.keys()] : [];
  names.sort((a, b) => ((order.indexOf(a) + 1 || 1e9) - (order.indexOf(b) + 1 || 1e9)) || (a < b ? -1 : 1));
  const fieldsPanel = h("section", { class: "panel" }, h("h2", {}, "Fields"),
    h("p", { class: "muted small" }, `Version ${profile.version}`, profile.deleted ? " · deleted upstream: it is in no segment" : ""),
    names.length ? h("table", { id: "record-fields", class: "compact" }, h("tbody", {}, names.map((n) => h("tr", {},
      h("th", { scope: "row" }, fieldLabel(n)), h("td", {}, formatValue(profile.fields[n], catalog?.fields.get(n)?.type))))))
      : h("p", { class: "muted" }, "No fields stored."));

  const cached = h("section", { class: "panel", id: "record-segments" }, h("h2", {}, "Segments it is in"),
    h("p", { class: "muted small" }, "Cached membership, kept current as changes arrive."),
    profile.segments.length ? h("ul", { class: "segment-list" }, profile.segments.map((s) => h("li", { dataset: { id: s.id } },
      h("a", { href: `#/segment/${encodeURIComponent(s.id)}` }, s.name))))
      : h("p", { class: "muted" }, "In no segment."));

  const current = h("section", { class: "panel", id: "record-current" }, h("h2", {}, "Current results"),
    h("p", { class: "muted" }, "Evaluating every rule now…"));
  fill(body, h("div", { class: "grid2" }, fieldsPanel, h("div", {}, cached, current)));

  const results = await attempt("Evaluating now", () => get(ws(`${path}/evaluate`)));
  if (!results) { fill(current, h("h2", {}, "Current results"), h("p", { class: "muted" }, "Could not evaluate now.")); return; }
  const differ = results.results.filter((r) => r.matches !== r.member).length;
  fill(current, h("h2", {}, "Current results"),
    h("p", { class: "muted small" }, `${formatCount(results.results.length)} rule-based segments evaluated now in ${results.took_ms} ms.`,
      differ ? ` ${differ} differ from the cached membership: a change is on its way.` : " All agree with the cached membership."),
    results.results.length ? h("table", { class: "compact", id: "current-results" },
      h("thead", {}, h("tr", {}, h("th", {}, "Segment"), h("th", {}, "Matches now"), h("th", {}, "Member (cached)"))),
      h("tbody", {}, results.results.map((r) => h("tr", { dataset: { id: r.id } },
        h("td", {}, h("a", { href: `#/segment/${encodeURIComponent(r.id)}` }, r.name)),
        h("td", {}, h("span", { class: r.matches ? "badge in" : "badge" }, r.matches ? "yes" : "no")),
        h("td", {}, r.member ? "yes" : "no")))))
      : h("p", { class: "muted" }, "No active rule-based segment for this object type."));
}
