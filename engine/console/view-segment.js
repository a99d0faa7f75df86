// Segment detail: the segment's header (name, description, count, kind, status), its members with the
// fields the user picks, a search over those fields and an extra filter condition, paging, CSV / NDJSON
// export, and for any member "Why?": the explanation, condition by condition, in plain words.
import { call, get, session, ws } from "./api.js";
import { attempt, busy, fill, formatCount, formatDate, go, h, notify, saveResponse, swatch } from "./ui.js";
import { fieldLabel, operatorWords } from "./words.js";

const PAGE_SIZE = 25;
const MAX_COLUMNS = 8;
const DEFAULT_FIELDS = {
  contact: ["first_name", "last_name", "email", "country"],
  company: ["name", "domain", "country", "industry"],
  deal: ["name", "stage", "amount", "owner"],
  ticket: ["subject", "status", "priority", "owner"],
  task: ["title", "status", "due_at", "owner"],
  product: ["name", "sku", "price", "status"],
};

const DURATION_OPS = new Set(["withinLast", "moreThanAgo", "withinNext"]);
const NO_VALUE_OPS = new Set(["null", "notNull"]);

const catalogs = new Map();

/** GET .../catalog/<type> as {fields: Map name -> {type, operators}}; null when the worker has no such route. */
export async function fieldCatalog(objectType) {
  const key = `${session.workspace}/${objectType}`;
  if (!catalogs.has(key)) {
    catalogs.set(key, get(ws(`/catalog/${objectType}`)).then((doc) => ({
      fields: new Map(doc.fields.map((f) => [f.name, f])),
    })).catch((err) => { catalogs.delete(key); if (err.status === 404) return null; throw err; }));
  }
  return catalogs.get(key);
}

/** A stored field value as a person reads it: datetimes are epoch ms in the engine's state. */
export function formatValue(value, type) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.length ? value.map((v) => formatValue(v, type)).join(", ") : "—";
  if (type === "datetime" && typeof value === "number") return formatDate(new Date(value).toISOString());
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") return value.toLocaleString();
  return String(value);
}

function formatDuration(ms) {
  const units = [["week", 604_800_000], ["day", 86_400_000], ["hour", 3_600_000], ["minute", 60_000], ["second", 1000]];
  for (const [unit, size] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}${ms / size === 1 ? "" : "s"}`;
  }
  return `${ms} ms`;
}

/** `events.purchase.sum.amount` -> words; null for a record field. */
function aggregateLabel(name) {
  if (!name.startsWith("events.")) return null;
  const [event, fn, prop] = name.slice(7).split(".");
  const words = { count: `Number of “${event}” events`, sum: `Total ${prop} of “${event}” events`,
    min: `Smallest ${prop} of “${event}” events`, max: `Largest ${prop} of “${event}” events`,
    last_seen: `Last “${event}” event` };
  return words[fn] || name;
}

const VERDICT_HEADINGS = {
  "All of these": "All of these hold", "Any of these": "At least one of these holds",
  "Not all of these": "Not all of these hold", "None of these": "None of these hold",
};

function groupHeading(combinator, negated) {
  if (combinator === "or") return negated ? "None of these" : "Any of these";
  return negated ? "Not all of these" : "All of these";
}

/** A condition's value as the rule stores it (ISO dates, durations such as "30d", lists or "a,b"). */
function ruleValue(cond, type) {
  const value = cond.value;
  if (NO_VALUE_OPS.has(cond.operator)) return "";
  if (DURATION_OPS.has(cond.operator)) return ` ${value}${cond.operator === "moreThanAgo" ? " ago" : ""}`;
  const one = (v) => (type === "datetime" && typeof v === "string" && !Number.isNaN(Date.parse(v)) ? formatDate(v) : formatValue(v, type));
  const list = Array.isArray(value) ? value : (typeof value === "string" && value.includes(",") ? value.split(",").map((x) => x.trim()) : null);
  if (["between", "notBetween"].includes(cond.operator) && list) return ` ${one(list[0])} and ${one(list[1])}`;
  return ` ${list ? list.map(one).join(", ") : one(value)}`;
}

/** A saved rule (react-querybuilder JSON) as nested lines in plain words. */
function ruleNode(node, catalog, segmentNames) {
  if (node.rules) {
    return h("li", { class: "why-group" }, h("strong", {}, groupHeading(node.combinator, node.not)),
      h("ul", {}, node.rules.map((child) => ruleNode(child, catalog, segmentNames))));
  }
  if (node.field === "segment") {
    return h("li", {}, `${operatorWords(node.operator)} “${segmentNames.get(node.value) || node.value}”`);
  }
  const type = node.field.startsWith("events.")
    ? (node.field.endsWith(".last_seen") ? "datetime" : "number") : catalog?.fields.get(node.field)?.type;
  const where = node.where ? Object.entries(node.where).map(([k, v]) => ` where ${k} is ${v}`).join("") : "";
  const windowText = node.window ? ` in the last ${node.window}` : "";
  return h("li", {}, h("strong", {}, aggregateLabel(node.field) || fieldLabel(node.field)), where, windowText,
    ` ${operatorWords(node.operator)}${ruleValue(node, type)}`);
}

/** One explanation node (GET .../explain/<record>) as nested, readable lines. */
function explanationNode(node, catalog, segmentNames) {
  const mark = h("span", { class: `verdict ${node.result ? "yes" : "no"}` }, node.result ? "✓" : "✗");
  if (node.kind === "group") {
    const heading = groupHeading(node.combinator, node.negated);
    return h("li", { class: "why-group" }, mark, " ", h("strong", {}, VERDICT_HEADINGS[heading]),
      h("span", { class: "muted" }, node.result ? " — yes" : " — no"),
      h("ul", {}, node.children.map((c) => explanationNode(c, catalog, segmentNames))));
  }
  if (node.field === "segment") {
    const name = segmentNames.get(node.expected) || node.expected;
    return h("li", { class: "why-condition" }, mark, " ", `${operatorWords(node.operator)} “${name}”`,
      h("span", { class: "muted" }, ` — the record is ${node.actual ? "in it" : "not in it"}`));
  }
  const type = node.field.startsWith("events.")
    ? (node.field.endsWith(".last_seen") ? "datetime" : "number") : catalog?.fields.get(node.field)?.type;
  const label = aggregateLabel(node.field) || fieldLabel(node.field);
  let expected = "";
  if (DURATION_OPS.has(node.operator)) {
    expected = ` ${formatDuration(node.expected)}${node.operator === "moreThanAgo" ? " ago" : ""}`;
  } else if (!NO_VALUE_OPS.has(node.operator)) {
    expected = Array.isArray(node.expected) && ["between", "notBetween"].includes(node.operator)
      ? ` ${formatValue(node.expected[0], type)} and ${formatValue(node.expected[1], type)}`
      : ` ${formatValue(node.expected, type)}`;
  }
  return h("li", { class: "why-condition" }, mark, " ", h("strong", {}, label), ` ${operatorWords(node.operator)}${expected}`,
    h("span", { class: "muted" }, ` — its value: ${formatValue(node.actual, type)}`));
}

export async function render(root, params) {
  const segmentId = params[0];
  if (!segmentId) { go("segments"); return undefined; }
  const canWrite = session.me.role !== "agent";
  const segment = await busy("Loading the segment", get(ws(`/segments/${encodeURIComponent(segmentId)}`)));
  const catalog = await fieldCatalog(segment.object_type).catch(() => null);
  const storageKey = `segment-console-fields-${segment.object_type}`;
  const saved = JSON.parse(localStorage.getItem(storageKey) || "null");
  const known = (names) => (catalog ? names.filter((n) => catalog.fields.has(n)) : names);
  const state = {
    fields: known(saved || DEFAULT_FIELDS[segment.object_type] || []),
    q: "", filter: null, cursors: [null], page: 0, fieldsSupported: true,
  };
  let segmentNames = null;
  if (JSON.stringify(segment.rule || {}).includes('"field":"segment"')) await namesOfSegments();

  async function namesOfSegments() {
    const listed = await get(ws(`/segments?object_type=${segment.object_type}`)).catch(() => ({ segments: [] }));
    segmentNames = new Map(listed.segments.map((s) => [s.id, s.name]));
  }

  // ---- header --------------------------------------------------------------------------------------
  const countText = h("span", { id: "member-count" }, formatCount(segment.member_count));
  const header = h("section", { class: "panel segment-header" },
    h("div", { class: "title-line" },
      h("h1", {}, swatch(segment.colour), segment.name),
      h("div", { class: "actions" },
        canWrite && segment.kind !== "static"
          ? h("button", { type: "button", onclick: () => go("builder", segment.object_type, segment.id) }, "Edit rule") : null,
        canWrite && segment.kind === "static" ? h("button", { type: "button", onclick: () => go("static") }, "Import or remove members") : null,
        h("button", { type: "button", onclick: () => go("segments", segment.object_type) }, "All segments"))),
    segment.description ? h("p", { class: "description" }, segment.description) : null,
    h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "Members"), h("dd", {}, countText)),
      h("div", {}, h("dt", {}, "Kind"), h("dd", { id: "segment-kind" }, segment.kind === "static" ? "Static list (imported)" : "Rule-based (kept current)")),
      h("div", {}, h("dt", {}, "Status"), h("dd", { id: "segment-status" }, segment.status === "inactive" ? "Inactive (members frozen)" : "Active")),
      h("div", {}, h("dt", {}, "Object type"), h("dd", {}, segment.object_type)),
      h("div", {}, h("dt", {}, "Last counted"), h("dd", {}, formatDate(segment.last_counted))),
      h("div", {}, h("dt", {}, "Modified"), h("dd", {}, formatDate(segment.modified_at))),
      segment.owner ? h("div", {}, h("dt", {}, "Owner"), h("dd", {}, segment.owner)) : null,
      segment.recalculation_interval_minutes
        ? h("div", {}, h("dt", {}, "Recalculated"), h("dd", {}, `every ${segment.recalculation_interval_minutes} min`)) : null,
      segment.hidden_from?.length ? h("div", {}, h("dt", {}, "Hidden from"), h("dd", {}, segment.hidden_from.join(", "))) : null,
      segment.default_for?.length ? h("div", {}, h("dt", {}, "Default for"), h("dd", {}, segment.default_for.join(", "))) : null),
    segment.rule ? h("details", { class: "rule-words", id: "segment-rule" }, h("summary", {}, "Rule"),
      h("ul", { class: "why-tree" }, ruleNode(segment.rule, catalog, segmentNames || new Map()))) : null);

  // ---- members toolbar -------------------------------------------------------------------------------
  const search = h("input", { id: "member-search", type: "search", placeholder: "Text in the shown fields", autocomplete: "off" });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.q = search.value.trim(); restart(); }, 300);
  });
  const picker = h("details", { class: "picker" }, h("summary", {}, "Columns"),
    h("div", { class: "picker-list" }, catalog ? [...catalog.fields.values()].map((f) => h("label", { class: "inline" },
      h("input", { type: "checkbox", value: f.name, checked: state.fields.includes(f.name), onchange: (e) => {
        if (e.target.checked && state.fields.length >= MAX_COLUMNS) {
          e.target.checked = false;
          notify(`At most ${MAX_COLUMNS} columns fit on the page.`, "error");
          return;
        }
        state.fields = e.target.checked ? [...state.fields, f.name] : state.fields.filter((n) => n !== f.name);
        localStorage.setItem(storageKey, JSON.stringify(state.fields));
        restart();
      } }), fieldLabel(f.name))) : h("p", { class: "muted" }, "The field list needs a newer worker.")));

  const filterBox = filterControls();
  const members = h("table", { id: "members-table" });
  const pager = h("div", { class: "pager" });
  const note = h("p", { class: "muted", id: "members-note" });

  fill(root, header,
    h("section", { class: "panel" },
      h("div", { class: "title-line" }, h("h2", {}, "Members"),
        h("div", { class: "actions" },
          h("button", { type: "button", id: "export-csv", onclick: () => exportAs("csv") }, "Export CSV"),
          h("button", { type: "button", id: "export-ndjson", onclick: () => exportAs("ndjson") }, "Export NDJSON"))),
      h("div", { class: "toolbar" },
        h("div", { class: "field grow" }, h("label", { for: "member-search" }, "Search"), search),
        h("div", { class: "field" }, h("span", { class: "label" }, "Fields shown"), picker)),
      filterBox.element, note, members, pager));

  function membersQuery(extra = {}) {
    const query = new URLSearchParams();
    if (state.fields.length) query.set("fields", state.fields.join(","));
    if (state.q) query.set("q", state.q);
    if (state.filter) query.set("filter", JSON.stringify(state.filter));
    for (const [k, v] of Object.entries(extra)) if (v !== null && v !== undefined) query.set(k, v);
    return query.toString();
  }

  function restart() {
    state.cursors = [null];
    state.page = 0;
    loadPage();
  }

  async function loadPage() {
    const cursor = state.cursors[state.page];
    let answer;
    try {
      answer = await busy("Loading members", get(ws(`/segments/${encodeURIComponent(segment.id)}/members?${membersQuery({ limit: PAGE_SIZE, cursor })}`)));
    } catch (err) {
      if (err.code === "invalid_rule") { filterBox.showProblems(err.problems); return; }
      notify(err.userMessage || String(err), "error");
      return;
    }
    filterBox.showProblems([]);
    state.fieldsSupported = Array.isArray(answer.records);
    state.cursors[state.page + 1] = answer.next_cursor;
    drawMembers(answer);
  }

  function drawMembers(answer) {
    const records = state.fieldsSupported ? answer.records : answer.members.map((id) => ({ id, fields: {} }));
    const columns = state.fieldsSupported ? state.fields : [];
    note.textContent = state.fieldsSupported ? ""
      : "Only record ids are shown: fields, search and filter in a segment need a newer worker.";
    const filtered = state.q || state.filter;
    fill(members,
      h("thead", {}, h("tr", {}, h("th", {}, "Record"), columns.map((f) => h("th", {}, fieldLabel(f))), h("th", {}, ""))),
      h("tbody", {}, records.length ? records.map((r) => memberRow(r, columns))
        : h("tr", {}, h("td", { colspan: columns.length + 2, class: "muted empty" },
          answer.next_cursor ? "No match on this stretch of members; try the next page."
            : filtered ? "No member matches the search and filter." : "This segment has no members yet."))));
    fill(pager,
      h("button", { type: "button", id: "previous-page", disabled: state.page === 0, onclick: () => { state.page -= 1; loadPage(); } }, "← Previous"),
      h("span", { class: "muted" }, `Page ${state.page + 1}`),
      h("button", { type: "button", id: "next-page", disabled: !answer.next_cursor, onclick: () => { state.page += 1; loadPage(); } }, "Next →"));
  }

  function memberRow(record, columns) {
    const row = h("tr", { dataset: { id: record.id } },
      h("td", {}, h("a", { href: `#/record/${segment.object_type}/${encodeURIComponent(record.id)}` }, record.id)),
      columns.map((f) => h("td", {}, formatValue(record.fields?.[f], catalog?.fields.get(f)?.type))),
      h("td", { class: "row-actions" }, h("button", { type: "button", class: "why", "aria-expanded": "false",
        onclick: (e) => toggleWhy(row, record.id, columns.length + 2, e.currentTarget) }, "Why?")));
    return row;
  }

  async function toggleWhy(row, recordId, span, button) {
    const open = row.nextElementSibling?.classList.contains("why-row") ? row.nextElementSibling : null;
    if (open) { open.remove(); button.setAttribute("aria-expanded", "false"); return; }
    const answer = await attempt(`Explaining ${recordId}`, () =>
      get(ws(`/segments/${encodeURIComponent(segment.id)}/explain/${encodeURIComponent(recordId)}`)));
    if (!answer) return;
    if (!segmentNames && JSON.stringify(answer.explanation).includes('"field":"segment"')) await namesOfSegments();
    const verdict = answer.member ? `${recordId} is a member of “${segment.name}”` : `${recordId} is not a member of “${segment.name}”`;
    const body = answer.explanation.kind === "static"
      ? h("p", {}, answer.member ? "It was imported into this list." : "It is not in the imported list.")
      : h("ul", { class: "why-tree" }, explanationNode(answer.explanation, catalog, segmentNames || new Map()));
    row.after(h("tr", { class: "why-row" }, h("td", { colspan: span },
      h("div", { class: "why" }, h("p", {}, h("strong", {}, verdict), answer.matches !== answer.member
        ? h("span", { class: "muted" }, " (the rule's result now differs: the change is on its way)") : null), body))));
    button.setAttribute("aria-expanded", "true");
  }

  async function exportAs(format) {
    await attempt(`Exporting ${format.toUpperCase()}`, async () => {
      const query = membersQuery({ format });
      const response = await call("GET", ws(`/segments/${encodeURIComponent(segment.id)}/export?${query}`), undefined, { raw: true });
      await saveResponse(response, `${segment.name.replace(/[^A-Za-z0-9 _-]+/g, "").trim() || segment.id}.${format}`);
    });
  }

  /** One extra condition over the segment's members: field, operator (only those valid for its type), value. */
  function filterControls() {
    const fields = catalog ? [...catalog.fields.values()] : [];
    const fieldSelect = h("select", { id: "filter-field" }, h("option", { value: "" }, "— no filter —"),
      fields.map((f) => h("option", { value: f.name }, fieldLabel(f.name))));
    const opSelect = h("select", { id: "filter-operator" });
    const value = h("input", { id: "filter-value", type: "text", placeholder: "value; several: a, b" });
    const problems = h("p", { class: "problem", id: "filter-problem", hidden: true });
    const fillOperators = () => {
      const f = catalog?.fields.get(fieldSelect.value);
      fill(opSelect, (f ? f.operators : []).map((op) => h("option", { value: op }, operatorWords(op))));
      syncValue();
    };
    const syncValue = () => {
      opSelect.disabled = !fieldSelect.value;
      value.disabled = NO_VALUE_OPS.has(opSelect.value) || !fieldSelect.value;
      const type = catalog?.fields.get(fieldSelect.value)?.type;
      value.placeholder = DURATION_OPS.has(opSelect.value) ? "e.g. 30 days"
        : type === "datetime" ? "a date, e.g. 2026-01-31" : type === "boolean" ? "true or false" : "value; several: a, b";
    };
    fieldSelect.addEventListener("change", fillOperators);
    opSelect.addEventListener("change", syncValue);
    fillOperators();
    const apply = (event) => {
      event.preventDefault();
      if (!fieldSelect.value) { state.filter = null; restart(); return; }
      const condition = { field: fieldSelect.value, operator: opSelect.value };
      if (!NO_VALUE_OPS.has(opSelect.value)) {
        const text = value.value.trim();
        condition.value = ["between", "notBetween"].includes(opSelect.value) ? text.split(",").map((s) => s.trim()) : text;
      }
      state.filter = { combinator: "and", rules: [condition] };
      restart();
    };
    const clear = () => { fieldSelect.value = ""; value.value = ""; fillOperators(); state.filter = null; restart(); };
    const element = h("form", { class: "filter-line", onsubmit: apply, "aria-label": "Filter members" },
      h("div", { class: "field" }, h("label", { for: "filter-field" }, "Filter: field"), fieldSelect),
      h("div", { class: "field" }, h("label", { for: "filter-operator" }, "Condition"), opSelect),
      h("div", { class: "field grow" }, h("label", { for: "filter-value" }, "Value"), value),
      h("div", { class: "field buttons" }, h("span", { class: "label" }, " "), h("div", { class: "actions" },
        h("button", { type: "submit" }, "Apply filter"), h("button", { type: "button", onclick: clear }, "Clear"))),
      problems);
    return {
      element,
      showProblems(list) {
        // The filter is one condition at /rules/0: every problem belongs to it.
        problems.hidden = !list.length;
        problems.textContent = list.map((p) => String(p.message || p.code)
          .replace(/^field '[^']*' \([a-z]+\) operator '[^']*': /, "")).join(" ")
          + (list.length ? ". The members below are still those of the last filter that worked." : "");
        element.classList.toggle("invalid", Boolean(list.length));
      },
    };
  }

  await loadPage();
  return () => clearTimeout(searchTimer);
}
