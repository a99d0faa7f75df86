// Builder: a segment's rule as nested AND/OR groups (with NOT) over the object type's catalog fields, a
// live preview while it changes (for an edit: what saving would add and remove), problems shown at the
// condition their path names, and save with name, description, colour, hidden from and default for.
// The rule is kept in react-querybuilder's JSON shape, exactly what the API stores (README "Rules").
import { ApiProblem, get, patch, post, session, ws } from "./api.js";
import { followProgress } from "./progress.js";
import { OBJECT_TYPES, busy, field, fill, formatCount, go, h, notify } from "./ui.js";
import { fieldLabel, operatorChoice } from "./words.js";

const PREVIEW_DELAY_MS = 400;
const SAMPLE_SIZE = 8;
const BEHAVIOUR = "events.";
const SEGMENT = "segment";

// Dates are picked as days (UTC). Exact-instant comparisons (=, <, <= …) read oddly for a day, so dates
// offer before / after / between and the relative operators; a rule that already uses one keeps it.
const HIDDEN_DATE_OPS = new Set(["=", "!=", "<", ">", "<=", ">="]);
const END_OF_DAY = "T23:59:59.999";
const LIST_OPS = new Set(["in", "notIn", "hasAny", "hasAll", "hasNone"]);
const PAIR_OPS = new Set(["between", "notBetween"]);
const DURATION_OPS = new Set(["withinLast", "moreThanAgo", "withinNext"]);
const NO_VALUE_OPS = new Set(["null", "notNull"]);
const UNITS = ["minutes", "hours", "days", "weeks"];
const MEASURES = { count: "number of", sum: "total of", min: "smallest", max: "largest", last_seen: "last time of" };
const COLOURS = ["#2557d6", "#1e7d3c", "#a86400", "#c0362c", "#7a3fc2", "#0f7c8c"];

function valueKind(op) {
  if (NO_VALUE_OPS.has(op)) return "none";
  if (LIST_OPS.has(op)) return "list";
  if (PAIR_OPS.has(op)) return "pair";
  if (DURATION_OPS.has(op)) return "duration";
  return "scalar";
}

function defaultValue(op, type) {
  return { none: undefined, list: [], pair: ["", ""], duration: "30 days", scalar: type === "boolean" ? true : "" }[valueKind(op)];
}

/** `events.purchase.sum.amount` -> {event, fn, prop}; null when it is not an aggregate field. */
function parseAggregate(name) {
  if (!name.startsWith(BEHAVIOUR)) return null;
  const [event = "", fn = "count", prop = ""] = name.slice(BEHAVIOUR.length).split(".");
  return { event, fn, prop };
}

function aggregateName({ event, fn, prop }) {
  return `${BEHAVIOUR}${event}.${fn}${["sum", "min", "max"].includes(fn) ? `.${prop}` : ""}`;
}

/** "30 days", "30d" or {amount, unit} -> {amount, unit} for the two inputs. */
function parseDuration(value) {
  if (value && typeof value === "object") return { amount: value.amount ?? "", unit: value.unit || "days" };
  const match = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(String(value ?? ""));
  if (!match) return { amount: "", unit: "days" };
  const short = { m: "minutes", min: "minutes", h: "hours", d: "days", w: "weeks" };
  let unit = match[2].toLowerCase();
  unit = short[unit] || (UNITS.find((u) => u.startsWith(unit.replace(/s$/, ""))) ?? "days");
  return { amount: Number(match[1]), unit };
}

function listText(value) {
  return Array.isArray(value) ? value.join(", ") : String(value ?? "");
}

function splitList(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

/** The problem's words without the "field 'x' (type) operator 'y': " preamble: it is shown at that condition. */
function problemText(problem) {
  return String(problem.message || problem.code).replace(/^field '[^']*' \([a-z]+\) operator '[^']*': /, "");
}

function ruleForApi(node) {
  // The model is already the API's shape; drop empty `where`s the inputs may leave behind.
  if (node.rules) return { combinator: node.combinator, not: Boolean(node.not), rules: node.rules.map(ruleForApi) };
  const out = { field: node.field, operator: node.operator };
  if (!NO_VALUE_OPS.has(node.operator)) out.value = node.value;
  if (node.window) out.window = node.window;
  if (node.where && Object.keys(node.where).length) out.where = node.where;
  return out;
}

export async function render(root, params) {
  const objectType = OBJECT_TYPES.includes(params[0]) ? params[0] : "contact";
  const segmentId = params[1] || null;
  const canWrite = session.me.role !== "agent";

  const [described, segments, team, existing] = await busy("Loading the builder", Promise.all([
    loadCatalog(objectType),
    get(ws(`/segments?object_type=${objectType}`)).then((r) => r.segments),
    get(ws("/team")).then((r) => r.members).catch(() => null),
    segmentId ? get(ws(`/segments/${encodeURIComponent(segmentId)}`)) : Promise.resolve(null),
  ]));
  if (!described) {
    fill(root, h("h1", {}, "Builder"), h("p", { class: "error", role: "alert" },
      "The list of fields needs a newer worker (GET /v1/workspaces/{ws}/catalog/{object type} is missing)."));
    return undefined;
  }
  if (existing && existing.kind === "static") {
    fill(root, h("h1", {}, existing.name), h("p", {}, "This is a static segment: its members come from imports, not rules. ",
      h("a", { href: "#/static" }, "Open static segments")));
    return undefined;
  }

  const state = {
    segmentId,
    original: existing,
    rule: existing?.rule ? structuredClone(existing.rule) : { combinator: "and", not: false, rules: [] },
    previewSeq: 0,
    previewTimer: null,
    stopBackfill: () => {},
    diffMissing: false,
  };
  const catalog = described.fields;
  const fieldsByName = new Map(catalog.map((f) => [f.name, f]));
  const aggregateOps = new Map((described.aggregates?.functions || []).map((f) => [f.function, f.operators]));
  const segmentOps = described.segment?.operators || ["memberOf", "notMemberOf"];
  const choosable = segments.filter((s) => s.id !== segmentId);

  const typeTabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Object type" },
    OBJECT_TYPES.map((t) => h("a", { href: `#/builder/${t}`, class: t === objectType ? "active" : null,
      "aria-selected": t === objectType ? "true" : "false", role: "tab" }, t)));
  const tree = h("div", { id: "rule-tree", class: "rule-tree" });
  const generalProblems = h("div", { class: "rule-problems", role: "alert" });
  const preview = h("section", { id: "preview", class: "panel preview", "aria-live": "polite" });
  const progress = h("section", { id: "backfill", class: "panel", hidden: true, "aria-live": "polite" });

  // ---- the rule tree ------------------------------------------------------------------------------

  function operatorsFor(name) {
    if (name === SEGMENT) return segmentOps;
    const aggregate = parseAggregate(name);
    if (aggregate) return (aggregateOps.get(aggregate.fn) || []).filter((op) => aggregate.fn !== "last_seen" || !HIDDEN_DATE_OPS.has(op));
    const info = fieldsByName.get(name);
    if (!info) return [];
    return info.type === "datetime" ? info.operators.filter((op) => !HIDDEN_DATE_OPS.has(op)) : info.operators;
  }

  function typeOf(name) {
    if (name === SEGMENT) return "segment";
    const aggregate = parseAggregate(name);
    if (aggregate) return aggregate.fn === "last_seen" ? "datetime" : "number";
    return fieldsByName.get(name)?.type || "string";
  }

  function newCondition(name) {
    const operator = operatorsFor(name)[0];
    const cond = { field: name, operator, value: defaultValue(operator, typeOf(name)) };
    if (name === SEGMENT) cond.value = choosable[0]?.id || "";
    return cond;
  }

  function changed({ structure = false } = {}) {
    if (structure) drawTree();
    schedulePreview();
  }

  function drawTree() {
    fill(tree, groupView(state.rule, "", null, -1));
    fill(generalProblems);
  }

  function groupView(group, path, parent, index) {
    const isRoot = parent === null;
    const combinator = h("select", { class: "group-combinator", "aria-label": "How the conditions combine",
      onchange: (e) => { group.combinator = e.target.value; changed(); } },
    h("option", { value: "and", selected: group.combinator === "and" }, "all of these match"),
    h("option", { value: "or", selected: group.combinator === "or" }, "any of these match"));
    const negate = h("input", { type: "checkbox", class: "group-not", checked: group.not,
      onchange: (e) => { group.not = e.target.checked; changed({ structure: true }); } });
    const head = h("div", { class: "group-head" },
      h("span", { class: "group-word" }, isRoot ? "Records where" : "Where"), combinator,
      h("label", { class: "inline" }, negate, " NOT (the opposite)"),
      h("span", { class: "spacer" }),
      h("button", { type: "button", class: "add-condition", onclick: () => {
        group.rules.push(newCondition(catalog[0].name)); changed({ structure: true });
      } }, "+ Condition"),
      h("button", { type: "button", class: "add-group", onclick: () => {
        group.rules.push({ combinator: "or", not: false, rules: [newCondition(catalog[0].name)] }); changed({ structure: true });
      } }, "+ Group"),
      !isRoot ? h("button", { type: "button", class: "remove danger", "aria-label": "Remove this group", onclick: () => {
        parent.rules.splice(index, 1); changed({ structure: true });
      } }, "Remove group") : null);
    const body = h("div", { class: "group-body" },
      group.rules.length ? group.rules.map((child, i) => (child.rules
        ? groupView(child, `${path}/rules/${i}`, group, i)
        : conditionView(child, `${path}/rules/${i}`, group, i)))
        : h("p", { class: "muted empty-group" }, isRoot ? "No conditions yet: add one to start." : "This group is empty."));
    return h("div", { class: `rule-group${group.not ? " negated" : ""}`, dataset: { path } },
      head, body, h("div", { class: "problems", role: "alert" }));
  }

  function fieldSelect(cond) {
    const standard = catalog.filter((f) => !f.name.startsWith("custom.") && f.name !== SEGMENT && !f.name.startsWith(BEHAVIOUR));
    const custom = catalog.filter((f) => f.name.startsWith("custom."));
    const aggregate = parseAggregate(cond.field);
    const option = (value, label) => h("option", { value, selected: value === cond.field || (value === BEHAVIOUR && aggregate) }, label);
    return h("select", { class: "cond-field", "aria-label": "Field", onchange: (e) => {
      const name = e.target.value === BEHAVIOUR ? aggregateName({ event: "purchase", fn: "count", prop: "" }) : e.target.value;
      Object.keys(cond).forEach((k) => delete cond[k]);
      Object.assign(cond, newCondition(name));
      changed({ structure: true });
    } },
    fieldsByName.has(cond.field) || aggregate || cond.field === SEGMENT ? null
      : h("option", { value: cond.field, selected: true }, `${cond.field} (not a field any more)`),
    h("optgroup", { label: "Fields" }, standard.map((f) => option(f.name, fieldLabel(f.name)))),
    custom.length ? h("optgroup", { label: "Custom fields" }, custom.map((f) => option(f.name, fieldLabel(f.name)))) : null,
    h("optgroup", { label: "Activity and segments" }, option(BEHAVIOUR, "Activity (events)"), option(SEGMENT, "Segment membership")));
  }

  function operatorSelect(cond) {
    const type = typeOf(cond.field);
    return h("select", { class: "cond-op", "aria-label": "Operator", onchange: (e) => {
      const before = valueKind(cond.operator);
      cond.operator = e.target.value;
      if (valueKind(cond.operator) !== before) cond.value = defaultValue(cond.operator, type);
      changed({ structure: true });
    } }, [...new Set([...operatorsFor(cond.field), cond.operator])].map((op) => h("option", { value: op, selected: op === cond.operator },
      operatorChoice(op, type))));
  }

  function input(attrs, onValue) {
    return h("input", { ...attrs, oninput: (e) => { onValue(e.target.value); changed(); } });
  }

  function valueEditor(cond) {
    const type = typeOf(cond.field);
    const kind = valueKind(cond.operator);
    if (kind === "none") return null;
    if (type === "segment") {
      return h("select", { class: "cond-value", "aria-label": "Segment", onchange: (e) => { cond.value = e.target.value; changed(); } },
        choosable.length ? null : h("option", { value: "" }, "(no other segment of this type)"),
        choosable.map((s) => h("option", { value: s.id, selected: s.id === cond.value }, s.name)));
    }
    if (kind === "duration") {
      const d = parseDuration(cond.value);
      const amount = h("input", { type: "number", min: 1, step: 1, class: "cond-value narrow", "aria-label": "How many", value: d.amount });
      const unit = h("select", { class: "cond-unit", "aria-label": "Unit" }, UNITS.map((u) => h("option", { value: u, selected: u === d.unit }, u)));
      const update = () => { cond.value = amount.value === "" ? "" : `${amount.value} ${unit.value}`; changed(); };
      amount.addEventListener("input", update);
      unit.addEventListener("change", update);
      return [amount, unit, cond.operator === "moreThanAgo" ? h("span", {}, "ago") : null];
    }
    if (kind === "list") {
      return input({ type: "text", class: "cond-value wide", "aria-label": "Values, separated by commas",
        placeholder: "values, separated by commas", value: listText(cond.value) }, (text) => { cond.value = splitList(text); });
    }
    if (type === "boolean") {
      return h("select", { class: "cond-value", "aria-label": "Value", onchange: (e) => { cond.value = e.target.value === "true"; changed(); } },
        h("option", { value: "true", selected: cond.value === true || cond.value === "true" }, "yes"),
        h("option", { value: "false", selected: cond.value === false || cond.value === "false" }, "no"));
    }
    const scalarType = type === "number" ? "number" : type === "datetime" ? "date" : "text";
    // A day's upper bounds ("after", the end of "between") mean the end of that day, not its first instant.
    const toValue = (text, upper = false) => {
      if (type === "number") return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text;
      if (type === "datetime" && text && upper) return text + END_OF_DAY;
      return text;
    };
    const shown = (v) => {
      if (type !== "datetime") return v ?? "";
      return typeof v === "number" ? new Date(v).toISOString().slice(0, 10) : String(v ?? "").slice(0, 10);
    };
    const label = (words) => (type === "datetime" ? `${words} (date, UTC)` : words);
    if (kind === "pair") {
      const bounds = Array.isArray(cond.value) ? [...cond.value] : ["", ""];
      cond.value = bounds;
      return [
        input({ type: scalarType, class: "cond-value pair", "aria-label": label("From"), value: shown(bounds[0]) }, (t) => { cond.value[0] = toValue(t); }),
        h("span", {}, "and"),
        input({ type: scalarType, class: "cond-value-hi pair", "aria-label": label("To"), value: shown(bounds[1]) }, (t) => { cond.value[1] = toValue(t, true); }),
      ];
    }
    return input({ type: scalarType, class: `cond-value${scalarType === "text" ? " wide" : ""}`, "aria-label": label("Value"),
      value: shown(cond.value), step: type === "number" ? "any" : null }, (t) => { cond.value = toValue(t, cond.operator === "after"); });
  }

  /** An aggregate's parts read as a sentence after the field: "total of" [purchase] [amount]. */
  function aggregateParts(cond) {
    const parts = parseAggregate(cond.field);
    if (!parts) return null;
    const rename = () => { cond.field = aggregateName(parts); changed(); };
    const measure = h("select", { class: "agg-measure", "aria-label": "Measure", onchange: (e) => {
      const wasDate = parts.fn === "last_seen";
      parts.fn = e.target.value;
      cond.field = aggregateName(parts);
      if (wasDate !== (parts.fn === "last_seen")) { cond.operator = operatorsFor(cond.field)[0]; cond.value = defaultValue(cond.operator, typeOf(cond.field)); }
      changed({ structure: true });
    } }, Object.entries(MEASURES).map(([fn, words]) => h("option", { value: fn, selected: fn === parts.fn }, words)));
    const event = h("input", { type: "text", class: "agg-event narrow", "aria-label": "Event name", value: parts.event,
      placeholder: "event, e.g. purchase", oninput: (e) => { parts.event = e.target.value.trim(); rename(); } });
    const prop = ["sum", "min", "max"].includes(parts.fn)
      ? h("input", { type: "text", class: "agg-property narrow", "aria-label": "Event property", value: parts.prop,
        placeholder: "property, e.g. amount", oninput: (e) => { parts.prop = e.target.value.trim(); rename(); } })
      : null;
    return [measure, event, prop];
  }

  /** An aggregate's optional sliding window and `where` filter, on a line of their own. */
  function aggregateOptions(cond) {
    if (!parseAggregate(cond.field)) return null;
    const window = parseDuration(cond.window);
    const windowAmount = h("input", { type: "number", min: 1, step: 1, class: "agg-window narrow", "aria-label": "Window length",
      value: cond.window ? window.amount : "", placeholder: "all time" });
    const windowUnit = h("select", { class: "agg-window-unit", "aria-label": "Window unit" },
      UNITS.map((u) => h("option", { value: u, selected: u === window.unit }, u)));
    const setWindow = () => { if (windowAmount.value) cond.window = `${windowAmount.value} ${windowUnit.value}`; else delete cond.window; changed(); };
    windowAmount.addEventListener("input", setWindow);
    windowUnit.addEventListener("change", setWindow);
    const [whereKey = "", whereValue = ""] = Object.entries(cond.where || {})[0] || [];
    const wKey = h("input", { type: "text", class: "agg-where-key narrow", "aria-label": "Only events whose property", value: whereKey, placeholder: "property" });
    const wValue = h("input", { type: "text", class: "agg-where-value narrow", "aria-label": "equals", value: whereValue, placeholder: "value" });
    const setWhere = () => {
      if (wKey.value.trim() || wValue.value.trim()) cond.where = { [wKey.value.trim()]: wValue.value.trim() }; else delete cond.where;
      changed();
    };
    wKey.addEventListener("input", setWhere);
    wValue.addEventListener("input", setWhere);
    return h("div", { class: "behaviour" },
      h("span", { class: "keep" }, h("span", { class: "muted" }, "events in the last"), windowAmount, windowUnit,
        h("span", { class: "muted" }, "(empty: all time; at most 90 days)")),
      h("span", { class: "keep" }, h("span", { class: "muted" }, "only events where"), wKey, "=", wValue,
        h("span", { class: "muted" }, "(optional)")));
  }

  function conditionView(cond, path, parent, index) {
    return h("div", { class: "rule-cond", dataset: { path } },
      h("div", { class: "cond-line" }, fieldSelect(cond), aggregateParts(cond), operatorSelect(cond), valueEditor(cond),
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "remove", "aria-label": "Remove this condition", onclick: () => {
          parent.rules.splice(index, 1); changed({ structure: true });
        } }, "Remove")),
      aggregateOptions(cond),
      h("div", { class: "problems", role: "alert" }));
  }

  /** Each problem at the condition (or group) its JSON pointer names; the rest above the tree. */
  function showProblems(problems) {
    for (const el of tree.querySelectorAll(".invalid")) el.classList.remove("invalid");
    for (const el of tree.querySelectorAll(".problems")) fill(el);
    fill(generalProblems);
    for (const problem of problems) {
      const target = [...tree.querySelectorAll("[data-path]")].find((el) => el.dataset.path === (problem.path || ""));
      const slot = target ? target.querySelector(":scope > .problems") : generalProblems;
      if (target) target.classList.add("invalid");
      slot.append(h("p", { class: "problem" }, problemText(problem)));
    }
  }

  // ---- live preview -------------------------------------------------------------------------------

  function schedulePreview() {
    clearTimeout(state.previewTimer);
    state.previewTimer = setTimeout(runPreview, PREVIEW_DELAY_MS);
  }

  async function runPreview() {
    const seq = ++state.previewSeq;
    if (!state.rule.rules.length) {
      showProblems([]);
      fill(preview, h("h2", {}, "Preview"), h("p", { class: "muted" }, "Add a condition to see which records match."));
      return;
    }
    preview.classList.add("loading");
    preview.querySelector(".preview-status")?.replaceChildren("Counting…");
    const rule = ruleForApi(state.rule);
    try {
      let answer;
      let diff = null;
      if (state.segmentId && !state.diffMissing) {
        try {
          answer = await post(ws(`/segments/${encodeURIComponent(state.segmentId)}/preview`), { rule, sample_size: SAMPLE_SIZE });
          diff = answer;
        } catch (err) {
          if (!(err instanceof ApiProblem) || ![404, 405].includes(err.status) || err.code === "not_ready") throw err;
          state.diffMissing = true;
        }
      }
      if (!answer) answer = await post(ws("/preview"), { object_type: objectType, rule, sample_size: SAMPLE_SIZE });
      if (seq !== state.previewSeq) return;
      showProblems([]);
      drawPreview(answer, diff);
    } catch (err) {
      if (seq !== state.previewSeq) return;
      if (err instanceof ApiProblem && err.problems.length) {
        showProblems(err.problems);
        fill(preview, h("h2", {}, "Preview"), h("p", { class: "preview-status muted" },
          `Fix the ${err.problems.length === 1 ? "highlighted condition" : `${err.problems.length} highlighted conditions`} to see a preview.`));
      } else {
        fill(preview, h("h2", {}, "Preview"), h("p", { class: "error" }, err.userMessage || String(err)));
      }
    } finally {
      if (seq === state.previewSeq) preview.classList.remove("loading");
    }
  }

  function sampleList(ids, label) {
    if (!ids || !ids.length) return null;
    return h("ul", { class: "sample", "aria-label": label }, ids.map((id) =>
      h("li", {}, h("a", { href: `#/record/${objectType}/${encodeURIComponent(id)}` }, id))));
  }

  function drawPreview(answer, diff) {
    fill(preview,
      h("h2", {}, "Preview"),
      h("p", { class: "preview-figure" }, h("strong", { class: "preview-count" }, formatCount(answer.count)),
        ` ${answer.count === 1 ? "record matches" : "records match"} now`),
      h("p", { class: "muted small" }, `Checked ${formatCount(answer.scanned)} records in ${Math.round(answer.took_ms ?? 0)} ms.`),
      sampleList(answer.sample, "Some matching records"),
      diff ? h("div", { class: "diff" },
        h("h3", {}, "Saving this edit would"),
        h("div", { class: "preview-added" }, h("span", { class: "badge in" }, "add ", h("span", { class: "count" }, formatCount(diff.added.count))),
          sampleList(diff.added.sample, "Some records it would add")),
        h("div", { class: "preview-removed" }, h("span", { class: "badge heavy" }, "remove ", h("span", { class: "count" }, formatCount(diff.removed.count))),
          sampleList(diff.removed.sample, "Some records it would remove"))) : null,
      state.segmentId && state.diffMissing
        ? h("p", { class: "muted small" }, "Showing what an edit adds and removes needs a newer worker.") : null);
  }

  // ---- save ---------------------------------------------------------------------------------------

  const name = h("input", { type: "text", id: "seg-name", required: true, maxlength: 200, value: existing?.name || "", disabled: !canWrite });
  const description = h("textarea", { id: "seg-description", maxlength: 2000, disabled: !canWrite }, existing?.description || "");
  const colour = h("input", { type: "color", id: "seg-colour", disabled: !canWrite,
    value: existing?.colour || COLOURS[Math.floor(Math.random() * COLOURS.length)] });
  const hiddenFrom = memberPicker("hidden-from", "Hidden from", existing?.hidden_from || [], team,
    "These team members will not see the segment anywhere.");
  const defaultFor = memberPicker("default-for", "Default for", existing?.default_for || [], team,
    "These team members open this data section on this segment.");
  const saveButton = h("button", { type: "submit", class: "primary", disabled: !canWrite }, segmentId ? "Save changes" : "Create segment");

  function memberPicker(id, label, chosen, members, hint) {
    if (!members) {
      const text = h("input", { type: "text", id, value: chosen.join(", "), placeholder: "team member names, separated by commas", disabled: !canWrite });
      return { el: field(label, text, "The team list needs a newer worker; type the names."), values: () => splitList(text.value) };
    }
    const boxes = members.map((m) => h("input", { type: "checkbox", value: m.name, checked: chosen.includes(m.name), disabled: !canWrite }));
    const el = h("fieldset", { class: "members", id },
      h("legend", {}, label),
      members.length ? members.map((m, i) => h("label", { class: "inline" }, boxes[i], ` ${m.name}`, m.role ? h("span", { class: "muted" }, ` (${m.role})`) : null))
        : h("p", { class: "muted" }, "No team members are declared for this workspace."),
      h("small", { class: "muted" }, hint));
    return { el, values: () => boxes.filter((b) => b.checked).map((b) => b.value) };
  }

  async function save(event) {
    event.preventDefault();
    const body = {
      name: name.value.trim(), description: description.value.trim() || null, colour: colour.value,
      hidden_from: hiddenFrom.values(), rule: ruleForApi(state.rule),
    };
    const defaults = defaultFor.values();
    const both = defaults.filter((m) => body.hidden_from.includes(m));
    if (both.length) {
      notify(`${both.join(", ")} ${both.length === 1 ? "is" : "are"} ticked under both "Hidden from" and "Default for": `
        + "a segment cannot open by default for someone who cannot see it.", "error");
      return;
    }
    body.default_for = defaults;
    let saved;
    saveButton.disabled = true; // one save at a time: a double click must not create the segment twice
    try {
      clearTimeout(state.previewTimer);
      saved = await busy(state.segmentId ? "Saving the segment" : "Creating the segment", state.segmentId
        ? patch(ws(`/segments/${encodeURIComponent(state.segmentId)}`), body)
        : post(ws("/segments"), { ...body, object_type: objectType, description: body.description || undefined }));
    } catch (err) {
      if (err instanceof ApiProblem && err.problems.length) {
        showProblems(err.problems);
        notify("Not saved: fix the highlighted conditions of the rule.", "error");
        return;
      }
      notify(err.userMessage || String(err), "error");
      return;
    } finally {
      saveButton.disabled = false;
    }
    const created = !state.segmentId;
    state.segmentId = saved.id;
    state.original = saved;
    state.diffMissing = false;
    saveButton.textContent = "Save changes";
    title.textContent = `Edit "${saved.name}"`;
    formTitle.textContent = "Segment details";
    typeTabs.remove();
    // Further saves edit the segment just created; the address says so too (without reloading the view).
    history.replaceState(null, "", `#/builder/${objectType}/${encodeURIComponent(saved.id)}`);
    notify(created ? `Created "${saved.name}".` : `Saved "${saved.name}".`);
    followBackfill(saved);
    schedulePreview();
  }

  /** The worker fills a new or edited segment over every stored record: follow it until done. */
  function followBackfill(segment) {
    state.stopBackfill();
    state.stopBackfill = followProgress(progress, {
      title: "Filling the segment", label: "Filling the segment", statusClass: "backfill-status",
      waiting: "Filling the segment from the stored records…",
      onDone: async (status) => {
        const fresh = await get(ws(`/segments/${encodeURIComponent(segment.id)}`)).catch(() => segment);
        fill(status, h("strong", {}, "Done: "), `${formatCount(fresh.member_count)} ${fresh.member_count === 1 ? "member" : "members"}. `,
          h("a", { href: `#/segment/${encodeURIComponent(segment.id)}` }, "Open the segment"), " · ",
          h("a", { href: "#/segments" }, "All segments"));
      },
    });
  }

  const formTitle = h("h2", {}, segmentId ? "Segment details" : "Save as a new segment");
  const title = h("h1", {}, existing ? (canWrite ? `Edit "${existing.name}"` : `"${existing.name}"`) : `New ${objectType} segment`);
  const form = h("form", { class: "panel save-form", onsubmit: save },
    formTitle,
    field("Name", name),
    field("Description", description),
    field("Colour", colour),
    h("div", { class: "grid2" }, hiddenFrom.el, defaultFor.el),
    canWrite ? h("div", { class: "actions" }, saveButton) : h("p", { class: "muted" }, "Only admins can save segments; you can still change the rule here to see its preview."));

  fill(root,
    title,
    existing ? null : typeTabs,
    h("div", { class: "builder-layout" },
      h("div", {}, h("section", { class: "panel" }, h("h2", {}, "Rule"), generalProblems, tree), form),
      h("div", { class: "builder-side" }, preview, progress)));
  drawTree();
  if (state.rule.rules.length) runPreview();
  else fill(preview, h("h2", {}, "Preview"), h("p", { class: "muted" }, "Add a condition to see which records match."));
  if (!canWrite && !existing) notify("You can try rules here; only admins can save segments.");

  return () => { clearTimeout(state.previewTimer); state.stopBackfill(); state.previewSeq += 1; };
}

/** The object type's fields (custom ones included) with the operators valid for each; null if the route is missing. */
async function loadCatalog(objectType) {
  try {
    return await get(ws(`/catalog/${objectType}`));
  } catch (err) {
    if (err instanceof ApiProblem && (err.status === 404 || err.status === 405)) return null;
    throw err;
  }
}
