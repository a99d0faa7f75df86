// Management: every segment of the workspace with its type, recalculation interval (editable in place),
// member count, when it was last counted, when it was modified and whether it is too heavy (with the
// measured cost); Recalculate one segment or all, then follow the worker's backfill on /health until done.
import { get, patch, post, session, ws } from "./api.js";
import { followProgress } from "./progress.js";
import { attempt, fill, formatCount, formatDate, h, notify, swatch } from "./ui.js";
import { TYPE_LABELS } from "./view-segments.js";

function typeLabel(t) {
  const plural = TYPE_LABELS[t] || t;
  return plural === "Companies" ? "Company" : plural.replace(/s$/, "");
}

export async function render(root) {
  const canWrite = session.me.role !== "agent";
  const table = h("table", { id: "manage-table" });
  const progress = h("section", { class: "panel", id: "recalc-progress", "aria-live": "polite", hidden: true });
  let stopFollowing = () => {};
  let segments = [];

  fill(root,
    h("h1", {}, "Segment management"),
    h("div", { class: "toolbar intro" },
      h("p", { class: "muted grow" }, canWrite
        ? "Membership is kept current as records change. Recalculate re-checks every stored record anyway, like a batch product's button; an interval does it on a schedule."
        : "Membership is kept current as records change. Only admins can recalculate or change intervals."),
      canWrite ? h("button", { id: "recalculate-all", class: "primary", onclick: () => recalculate(null) }, "Recalculate all") : null),
    progress, table);

  function cost(s) {
    const c = s.evaluation_cost;
    if (!c) return h("td", { class: "heavy" }, h("span", { class: "muted" }, "not measured"));
    const round = (n) => n.toLocaleString(undefined, { maximumSignificantDigits: 2 });
    return h("td", { class: "heavy", title: "Measured on live traffic: CPU time per second and rule checks per second" },
      c.too_heavy ? h("span", { class: "badge heavy" }, "Too heavy") : h("span", { class: "badge" }, "No"),
      h("div", { class: "muted small" }, `${round(c.cpu_ms_per_s)} ms CPU/s`),
      h("div", { class: "muted small" }, `${round(c.evaluations_per_s)} checks/s`));
  }

  function intervalCell(s) {
    if (s.kind === "static") return h("td", { class: "muted" }, "imported list");
    const value = s.recalculation_interval_minutes;
    if (!canWrite) return h("td", {}, value ? `every ${value} min` : "none");
    const input = h("input", { type: "number", min: 1, max: 525600, step: 1, class: "narrow interval", placeholder: "none",
      value: value ?? "", "aria-label": `Recalculation interval of ${s.name}, in minutes (blank for none)`,
      onchange: () => saveInterval(s, input) });
    return h("td", {}, h("div", { class: "inline-controls" }, input, h("span", { class: "muted small" }, "min")));
  }

  async function saveInterval(s, input) {
    const text = input.value.trim();
    const minutes = text === "" ? null : Number(text);
    if (minutes !== null && !(Number.isInteger(minutes) && minutes >= 1 && minutes <= 525600)) {
      notify("The interval is a whole number of minutes from 1 to 525,600, or blank for none.", "error");
      input.value = s.recalculation_interval_minutes ?? "";
      return;
    }
    const saved = await attempt(`Saving the interval of “${s.name}”`, () =>
      patch(ws(`/segments/${encodeURIComponent(s.id)}`), { recalculation_interval_minutes: minutes }));
    if (!saved) { input.value = s.recalculation_interval_minutes ?? ""; return; }
    s.recalculation_interval_minutes = saved.recalculation_interval_minutes;
    notify(minutes === null ? `“${s.name}” is no longer recalculated on a schedule.`
      : `“${s.name}” is recalculated every ${minutes} minutes.`);
  }

  function draw() {
    fill(table,
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", {}, "Recalculation interval"),
        h("th", { class: "num" }, "Members"), h("th", {}, "Last counted"), h("th", {}, "Modified"), h("th", {}, "Too heavy"),
        canWrite ? h("th", {}, "Actions") : null)),
      h("tbody", {}, segments.length ? segments.map((s) => h("tr", { dataset: { id: s.id } },
        h("td", {}, swatch(s.colour), h("a", { href: `#/segment/${encodeURIComponent(s.id)}` }, s.name),
          s.status === "inactive" ? h("span", { class: "badge" }, "inactive") : null),
        h("td", {}, typeLabel(s.object_type)),
        intervalCell(s),
        h("td", { class: "num count" }, formatCount(s.member_count)),
        h("td", {}, formatDate(s.last_counted)),
        h("td", {}, formatDate(s.modified_at)),
        cost(s),
        canWrite ? h("td", {}, s.kind === "static" || s.status === "inactive"
          ? h("span", { class: "muted small" }, s.kind === "static" ? "nothing to recalculate" : "activate it first")
          : h("button", { type: "button", class: "recalculate", onclick: () => recalculate(s) }, "Recalculate")) : null))
        : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No segments in this workspace yet."))));
  }

  async function load() {
    const answer = await attempt("Loading segments", () => get(ws("/segments?sort=name")));
    if (!answer) return;
    segments = answer.segments;
    draw();
  }

  async function recalculate(segment) {
    const what = segment ? `“${segment.name}”` : "every active segment";
    const answer = await attempt(`Recalculating ${what}`, () => post(segment
      ? ws(`/segments/${encodeURIComponent(segment.id)}/recalculate`) : ws("/segments/recalculate")));
    if (!answer) return;
    follow(what);
  }

  /** The worker re-checks every stored record: follow it until done, then show the fresh counts. */
  function follow(what) {
    stopFollowing();
    stopFollowing = followProgress(progress, {
      title: `Recalculating ${what}`, label: "Recalculation progress", statusClass: "recalc-status",
      waiting: "Checking the stored records…",
      onDone: async (status) => {
        await load();
        fill(status, h("strong", {}, "Done. "), `The counts below are up to date (${formatDate(new Date().toISOString())}).`);
      },
    });
  }

  await load();
  return () => stopFollowing();
}
