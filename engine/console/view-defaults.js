// Defaults: the segment each data section (object type) opens on. Admins set the team default; anyone
// pins their own; a segment's "default for" gives chosen agents theirs. What a person opens on resolves
// pin -> default for them -> team default, and this view shows that resolution too.
import { ApiProblem, get, put, session, ws } from "./api.js";
import { OBJECT_TYPES, attempt, busy, fill, h, notify } from "./ui.js";

const SECTIONS = { contact: "Contacts", company: "Companies", deal: "Deals", ticket: "Tickets", task: "Tasks", product: "Products" };
const SOURCE_WORDS = {
  me: { pin: "your pin", member: "set for you on the segment", shared: "the team default" },
  other: { pin: "their pin", member: "set for them on the segment", shared: "the team default" },
};

export async function render(root) {
  const isAdmin = session.me.role !== "agent";
  let defaults;
  try {
    defaults = await busy("Loading the defaults", get(ws("/defaults")));
  } catch (err) {
    if (err instanceof ApiProblem && err.status === 404 && err.code !== "not_ready") {
      fill(root, h("h1", {}, "Defaults"), h("p", { class: "error", role: "alert" }, "Defaults need a newer worker (GET /v1/workspaces/{ws}/defaults is missing)."));
      return;
    }
    throw err;
  }
  const [segments, team] = await busy("Loading the segments", Promise.all([
    get(ws("/segments")).then((r) => r.segments),
    get(ws("/team")).then((r) => r.members).catch(() => []),
  ]));
  const byId = new Map(segments.map((s) => [s.id, s]));
  const resolvedBox = h("section", { class: "panel", id: "resolved", "aria-live": "polite" });
  let viewedMember = session.me.member;

  const nameOf = (id) => (id ? byId.get(id)?.name || `${id} (not visible to you)` : null);

  function picker(kind, objectType, chosen, enabled) {
    const label = `${kind === "shared" ? "Team default" : "My pin"}: ${SECTIONS[objectType] || objectType}`;
    return h("select", { class: `default-${kind}`, dataset: { objectType }, "aria-label": label, disabled: !enabled,
      onchange: async (e) => {
        const segmentId = e.target.value || null;
        const done = await attempt("Saving the default", () => put(ws(`/defaults/${kind}/${objectType}`), { segment_id: segmentId }));
        if (done === undefined) { e.target.value = chosen || ""; return; }
        chosen = segmentId;
        const what = `${kind === "shared" ? "Team default" : "Your pin"} for ${(SECTIONS[objectType] || objectType).toLowerCase()}`;
        notify(segmentId ? `${what}: ${nameOf(segmentId)}.` : `${what} removed.`);
        await drawResolved();
      } },
    h("option", { value: "" }, kind === "shared" ? "(all records)" : "(no pin)"),
    chosen && !byId.has(chosen) ? h("option", { value: chosen, selected: true }, nameOf(chosen)) : null,
    segments.filter((s) => s.object_type === objectType).map((s) => h("option", { value: s.id, selected: s.id === chosen }, s.name)));
  }

  async function drawResolved() {
    const query = isAdmin && viewedMember && viewedMember !== session.me.member ? `?member=${encodeURIComponent(viewedMember)}` : "";
    const answer = await attempt("Resolving what opens first", () => get(ws(`/defaults/resolved${query}`)));
    if (!answer) return;
    const mine = answer.member === session.me.member;
    const who = mine ? "I open" : `${answer.member} opens`;
    const words = SOURCE_WORDS[mine ? "me" : "other"];
    const memberPicker = isAdmin && team.length
      ? h("label", { class: "inline" }, "For ", h("select", { id: "resolved-member", "aria-label": "Team member", onchange: (e) => { viewedMember = e.target.value; drawResolved(); } },
        [session.me.member, ...team.map((m) => m.name).filter((n) => n !== session.me.member)].map((n) =>
          h("option", { value: n, selected: n === answer.member }, n === session.me.member ? `${n} (me)` : n))))
      : null;
    fill(resolvedBox,
      h("div", { class: "inline-controls" }, h("h2", {}, `What ${who} on`), h("span", { class: "spacer" }), memberPicker),
      h("table", { id: "resolved-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Data section"), h("th", {}, "Opens on"), h("th", {}, "Because it is"))),
        h("tbody", {}, OBJECT_TYPES.map((t) => {
          const entry = answer.defaults[t];
          return h("tr", { dataset: { objectType: t } }, h("td", {}, SECTIONS[t] || t),
            h("td", { class: "opens-on" }, entry ? h("a", { href: `#/segment/${encodeURIComponent(entry.segment_id)}` }, nameOf(entry.segment_id)) : h("span", { class: "muted" }, "all records")),
            h("td", { class: "source" }, entry ? words[entry.source] || entry.source : "—"));
        }))));
  }

  const perMember = Object.entries(defaults.for_members || {}).flatMap(([member, types]) =>
    Object.entries(types).map(([objectType, segmentId]) => ({ member, objectType, segmentId })));

  fill(root,
    h("h1", {}, "Defaults"),
    h("p", { class: "muted" }, "The segment a data section opens on. Your pin comes first, then a default set for you on a segment, then the team default."),
    h("section", { class: "panel" },
      h("h2", {}, "Team defaults and my pins"),
      isAdmin ? null : h("p", { class: "muted small" }, "Only admins change the team defaults; you can pin your own."),
      h("table", { id: "defaults-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Data section"), h("th", {}, "Team default"), h("th", {}, "My pin"))),
        h("tbody", {}, OBJECT_TYPES.map((t) => h("tr", { dataset: { objectType: t } },
          h("td", {}, SECTIONS[t] || t),
          h("td", {}, picker("shared", t, defaults.shared?.[t] || null, isAdmin)),
          h("td", {}, picker("mine", t, defaults.mine?.[t] || null, true))))))),
    resolvedBox,
    h("section", { class: "panel" },
      h("h2", {}, isAdmin ? "Defaults per agent" : "Set for me"),
      h("p", { class: "muted small" }, "These come from each segment's \"Default for\" list: edit the segment to change them."),
      perMember.length
        ? h("table", { id: "member-defaults" },
          h("thead", {}, h("tr", {}, h("th", {}, "Team member"), h("th", {}, "Data section"), h("th", {}, "Segment"), h("th", {}, ""))),
          h("tbody", {}, perMember.map(({ member, objectType, segmentId }) => h("tr", {},
            h("td", {}, member), h("td", {}, SECTIONS[objectType] || objectType), h("td", {}, nameOf(segmentId)),
            h("td", {}, isAdmin ? h("a", { href: `#/builder/${objectType}/${encodeURIComponent(segmentId)}` }, "Edit the segment") : null)))))
        : h("p", { class: "muted" }, isAdmin ? "No segment is the default for anyone yet." : "No segment is set as your default.")));
  await drawResolved();
}
