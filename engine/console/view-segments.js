// Segments: one tab per object type; the segments of that type with colour, description, member count and
// creation date; search by name and description as you type, sort by name or created date (both ways),
// and view, edit or delete each one. Deleting a segment never deletes records: the confirmation says so.
import { del, get, session, ws } from "./api.js";
import { OBJECT_TYPES, attempt, confirmAction, fill, formatCount, formatDate, go, h, notify, swatch } from "./ui.js";

export const TYPE_LABELS = {
  contact: "Contacts", company: "Companies", deal: "Deals", ticket: "Tickets", task: "Tasks", product: "Products",
};
const SORTS = { name: "Name", created_at: "Created" };

export async function render(root, params) {
  const objectType = OBJECT_TYPES.includes(params[0]) ? params[0] : "contact";
  const canWrite = session.me.role !== "agent";
  const state = { segments: [], query: "", sort: "name", descending: false };

  const search = h("input", { id: "segment-search", type: "search", placeholder: "Type to filter by name or description",
    autocomplete: "off", class: "wide", oninput: () => { state.query = search.value.trim().toLowerCase(); draw(); } });
  const summary = h("p", { class: "muted", id: "segment-summary" });
  const table = h("table", { id: "segments-table" });

  fill(root,
    h("h1", {}, "Segments"),
    h("nav", { class: "tabs", "aria-label": "Object types" }, OBJECT_TYPES.map((t) =>
      h("a", { href: `#/segments/${t}`, class: t === objectType ? "active" : null,
        "aria-current": t === objectType ? "page" : null }, TYPE_LABELS[t]))),
    h("div", { class: "toolbar" },
      h("div", { class: "field grow" }, h("label", { for: "segment-search" }, "Search"), search),
      canWrite ? h("button", { class: "primary", id: "new-segment", onclick: () => go("builder", objectType) },
        "New segment") : null),
    summary, table);

  function sorted() {
    const q = state.query;
    const found = state.segments.filter((s) => !q || s.name.toLowerCase().includes(q)
      || (s.description || "").toLowerCase().includes(q));
    const key = (s) => (state.sort === "name" ? s.name.toLowerCase() : s.created_at || "");
    found.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : a.id < b.id ? -1 : 1));
    return state.descending ? found.reverse() : found;
  }

  function header(sortKey) {
    const active = state.sort === sortKey;
    const arrow = active ? (state.descending ? " ▼" : " ▲") : "";
    return h("th", { "aria-sort": active ? (state.descending ? "descending" : "ascending") : "none" },
      h("button", { type: "button", class: "sort", dataset: { sort: sortKey },
        title: `Sort by ${SORTS[sortKey].toLowerCase()}`, onclick: () => {
          state.descending = state.sort === sortKey ? !state.descending : false;
          state.sort = sortKey;
          draw();
        } }, SORTS[sortKey] + arrow));
  }

  function row(s) {
    return h("tr", { dataset: { id: s.id } },
      h("td", { class: "name" }, swatch(s.colour),
        h("a", { href: `#/segment/${encodeURIComponent(s.id)}` }, s.name),
        s.kind === "static" ? h("span", { class: "badge" }, "static list") : null,
        s.status === "inactive" ? h("span", { class: "badge" }, "inactive") : null),
      h("td", { class: "description" }, s.description || h("span", { class: "muted" }, "—")),
      h("td", { class: "num count" }, formatCount(s.member_count)),
      h("td", { class: "created" }, formatDate(s.created_at)),
      h("td", {}, h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => go("segment", s.id) }, "View"),
        canWrite && s.kind !== "static" ? h("button", { type: "button", onclick: () => go("builder", objectType, s.id) }, "Edit") : null,
        canWrite ? h("button", { type: "button", class: "danger", onclick: () => remove(s) }, "Delete") : null)));
  }

  function draw() {
    const shown = sorted();
    const total = state.segments.length;
    summary.textContent = state.query
      ? `${shown.length} of ${total} ${objectType} segments match “${search.value.trim()}”.`
      : `${total} ${objectType} ${total === 1 ? "segment" : "segments"}.`;
    fill(table,
      h("thead", {}, h("tr", {}, header("name"), h("th", {}, "Description"), h("th", { class: "num" }, "Members"),
        header("created_at"), h("th", {}, "Actions"))),
      h("tbody", {}, shown.length ? shown.map(row)
        : h("tr", {}, h("td", { colspan: 5, class: "muted empty" }, state.query
          ? "No segment matches your search."
          : `No ${objectType} segments yet.`))));
  }

  async function remove(s) {
    const members = s.member_count === null || s.member_count === undefined ? "Its members" : `Its ${formatCount(s.member_count)} members`;
    const ok = confirmAction(`Delete the segment “${s.name}”?\n\n${members} are not deleted: deleting a segment never `
      + "deletes records. Automations that use this segment stop receiving its entered and exited events.");
    if (!ok) return;
    const done = await attempt(`Deleting “${s.name}”`, async () => {
      try {
        await del(ws(`/segments/${encodeURIComponent(s.id)}`));
        return true;
      } catch (err) {
        if (err.code === "segment_in_use") err.userMessage = inUseMessage(s, err.body);
        throw err;
      }
    });
    if (done) {
      notify(`Deleted “${s.name}”. No record was deleted.`);
      await load();
    }
  }

  function inUseMessage(s, body) {
    const names = (body.referenced_by || []).map((id) => state.segments.find((x) => x.id === id)?.name || id);
    if (names.length) return `“${s.name}” cannot be deleted: the segments ${names.map((n) => `“${n}”`).join(", ")} use it in their rules. Change or delete those first.`;
    return `“${s.name}” cannot be deleted: chat assignment rules route conversations by it. Change those rules first.`;
  }

  async function load() {
    const answer = await attempt("Loading segments", () => get(ws(`/segments?object_type=${objectType}&sort=name`)));
    if (!answer) return;
    state.segments = answer.segments;
    draw();
  }

  await load();
  search.focus();
}
