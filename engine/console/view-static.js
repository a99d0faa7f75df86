// Static segments: lists whose members come from imports, not rules. Create one, import a CSV of record
// ids into a new list or an existing one (add or remove), follow the upload, and remove single members.
import { del, get, post, session, ws } from "./api.js";
import { OBJECT_TYPES, attempt, busy, field, fill, formatCount, formatDate, h, notify, swatch } from "./ui.js";
import { TYPE_LABELS } from "./view-segments.js";

const CHUNK = 10_000; // ids per import request (the API takes up to 100,000)
const MEMBERS_SHOWN = 20;

function singular(t) {
  return TYPE_LABELS[t].replace(/ies$/, "y").replace(/s$/, "");
}

/** Split one CSV line into cells ("quoted, with ""escapes""" allowed). */
function cells(line) {
  const out = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i += 1) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') { cell += '"'; i += 1; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { out.push(cell); cell = ""; } else cell += c;
  }
  out.push(cell);
  return out.map((s) => s.trim());
}

/** Record ids from CSV text: the column named id or record_id when the first line names one, else the
 * first column of every line. Blank lines and repeats are dropped. */
export function idsFromCsv(text) {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/).filter((l) => l.trim());
  if (!lines.length) return [];
  const head = cells(lines[0]).map((c) => c.toLowerCase());
  let column = head.findIndex((c) => c === "record_id");
  if (column < 0) column = head.findIndex((c) => c === "id");
  const rows = column >= 0 ? lines.slice(1) : lines;
  const ids = rows.map((l) => cells(l)[Math.max(column, 0)] || "").filter(Boolean);
  return [...new Set(ids)];
}

function importName() {
  const now = new Date().toISOString();
  return `Import ${now.slice(0, 10)} ${now.slice(11, 16)}`;
}

export async function render(root) {
  const canWrite = session.me.role !== "agent";
  let lists = [];
  const table = h("table", { id: "static-table" });
  const membersPanel = h("section", { class: "panel", id: "static-members", hidden: true });

  // ---- create ----------------------------------------------------------------------------------------
  const createName = h("input", { id: "create-name", type: "text", required: true, maxlength: 200 });
  const createType = h("select", { id: "create-type" }, OBJECT_TYPES.map((t) => h("option", { value: t }, singular(t))));
  const createDescription = h("input", { id: "create-description", type: "text", maxlength: 2000 });
  const createForm = h("form", { class: "panel", id: "create-static", onsubmit: async (e) => {
    e.preventDefault();
    const made = await attempt("Creating the list", () => createList(createName.value.trim(), createType.value, createDescription.value.trim()));
    if (!made) return;
    notify(`Created the static segment “${made.name}”. Import a CSV into it below.`);
    createName.value = ""; createDescription.value = "";
    await load();
    target.value = made.id;
    syncTarget();
  } },
  h("h2", {}, "New static segment"),
  h("div", { class: "toolbar" }, field("Name", createName), field("Object type", createType),
    h("div", { class: "field grow" }, h("label", { for: "create-description" }, "Description"), createDescription),
    h("div", { class: "field buttons" }, h("span", { class: "label" }, " "), h("button", { type: "submit", class: "primary" }, "Create"))));

  // ---- import ----------------------------------------------------------------------------------------
  const file = h("input", { id: "import-file", type: "file", accept: ".csv,.txt,text/csv,text/plain", required: true });
  const target = h("select", { id: "import-target", onchange: () => syncTarget() });
  const newName = h("input", { id: "import-name", type: "text", value: importName(), maxlength: 200 });
  const newType = h("select", { id: "import-type" }, OBJECT_TYPES.map((t) => h("option", { value: t }, singular(t))));
  const mode = h("select", { id: "import-mode" }, h("option", { value: "add" }, "Add these records"),
    h("option", { value: "remove" }, "Remove these records"));
  const newFields = h("div", { class: "toolbar new-list" }, field("Name of the new list", newName), field("Object type", newType));
  const progress = h("div", { class: "import-progress", id: "import-progress", "aria-live": "polite", hidden: true });
  const importForm = h("form", { class: "panel", id: "import-csv", onsubmit: (e) => { e.preventDefault(); runImport(); } },
    h("h2", {}, "Import a CSV"),
    h("p", { class: "muted small" }, "One record id per line, or a column named “id” or “record_id”. Importing never creates or changes records: it only adds them to the list (or removes them)."),
    h("div", { class: "toolbar" }, field("CSV file", file), field("Into", target), field("What to do", mode)),
    newFields,
    h("button", { type: "submit", class: "primary", id: "import-start" }, "Import"),
    progress);

  function syncTarget() {
    newFields.hidden = target.value !== "";
    if (target.value === "") mode.value = "add";
    mode.disabled = target.value === "";
  }

  async function createList(name, objectType, description) {
    const body = { object_type: objectType, name, kind: "static" };
    if (description) body.description = description;
    return post(ws("/segments"), body);
  }

  async function runImport() {
    const chosen = file.files[0];
    if (!chosen) { notify("Choose a CSV file first.", "error"); return; }
    const ids = idsFromCsv(await chosen.text());
    if (!ids.length) { notify("No record ids found in that file.", "error"); return; }
    const start = importForm.querySelector("#import-start");
    start.disabled = true;
    progress.hidden = false;
    const bar = h("progress", { max: ids.length, value: 0, "aria-label": "Import progress" });
    const first = ids.slice(0, 3).join(", ") + (ids.length > 3 ? ", …" : "");
    const read = h("p", { class: "muted small" }, `${chosen.name}: ${formatCount(ids.length)} record ids (${first}).`);
    const status = h("p", {}, "Sending…");
    fill(progress, read, bar, status);
    try {
      await busy("Importing", (async () => {
        let list = lists.find((l) => l.id === target.value);
        if (!list) {
          status.textContent = "Creating the list…";
          list = await createList(newName.value.trim() || importName(), newType.value, "");
        }
        for (let i = 0; i < ids.length; i += CHUNK) {
          const chunk = ids.slice(i, i + CHUNK);
          await post(ws(`/segments/${encodeURIComponent(list.id)}/members`), { record_ids: chunk, mode: mode.value });
          bar.value = i + chunk.length;
          status.textContent = `Sent ${formatCount(i + chunk.length)} of ${formatCount(ids.length)} record ids…`;
        }
        status.textContent = "Sent. Waiting for the list to take them in…";
        const count = await settledCount(list, target.value === "" ? ids.length : null);
        const verb = mode.value === "remove" ? "Removed" : "Added";
        fill(status, h("strong", {}, "Done. "), `${verb} ${formatCount(ids.length)} record ids ${mode.value === "remove" ? "from" : "to"} “${list.name}”. `,
          `It now has ${formatCount(count)} ${count === 1 ? "member" : "members"}. `,
          h("a", { href: `#/segment/${encodeURIComponent(list.id)}`, id: "import-open" }, "Open the list"));
        status.classList.add("done");
        newName.value = importName();
        await load();
        target.value = list.id;
        syncTarget();
      })());
    } catch (err) {
      fill(status, h("span", { class: "error" }, `The import stopped: ${err.userMessage || err.message}`),
        bar.value ? ` ${formatCount(bar.value)} ids were sent before it stopped; importing the same file again is safe.` : "");
    } finally {
      start.disabled = false;
    }
  }

  /** The list's member count once the stream has applied the import: `expected` when it is known (a new
   * list), else when it has not moved for a few polls. Gives up waiting after about 20 s. */
  async function settledCount(list, expected) {
    const countOf = async () => (await get(ws(`/segments/${encodeURIComponent(list.id)}/count`))).member_count;
    let last = await countOf();
    let still = 0;
    for (let i = 0; i < 40 && (expected === null ? still < 3 : last !== expected); i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const now = await countOf();
      still = now === last ? still + 1 : 0;
      last = now;
    }
    return last;
  }

  // ---- list and members ------------------------------------------------------------------------------
  function draw() {
    fill(table,
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", { class: "num" }, "Members"),
        h("th", {}, "Created"), h("th", {}, "Actions"))),
      h("tbody", {}, lists.length ? lists.map((l) => h("tr", { dataset: { id: l.id } },
        h("td", {}, swatch(l.colour), h("a", { href: `#/segment/${encodeURIComponent(l.id)}` }, l.name),
          l.status === "inactive" ? h("span", { class: "badge" }, "inactive") : null),
        h("td", {}, singular(l.object_type)),
        h("td", { class: "num count" }, formatCount(l.member_count)),
        h("td", {}, formatDate(l.created_at)),
        h("td", {}, h("div", { class: "actions" },
          h("button", { type: "button", class: "show-members", onclick: () => showMembers(l, null) }, "Members"),
          canWrite ? h("button", { type: "button", onclick: () => { target.value = l.id; syncTarget(); file.focus(); } }, "Import into it") : null))))
        : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No static segments yet."))));
    const current = target.value;
    fill(target, h("option", { value: "" }, "A new list"), lists.map((l) => h("option", { value: l.id }, `${l.name} (${singular(l.object_type)})`)));
    target.value = lists.some((l) => l.id === current) ? current : "";
  }

  async function showMembers(list, cursor) {
    const page = await attempt(`Loading the members of “${list.name}”`, () =>
      get(ws(`/segments/${encodeURIComponent(list.id)}/members?limit=${MEMBERS_SHOWN}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)));
    if (!page) return;
    membersPanel.hidden = false;
    const removeInput = h("input", { id: "remove-id", type: "text", placeholder: "record id", autocomplete: "off" });
    fill(membersPanel, h("h2", {}, `Members of “${list.name}”`),
      page.members.length ? h("table", { class: "compact", id: "static-member-list" }, h("tbody", {}, page.members.map((id) => h("tr", { dataset: { id } },
        h("td", {}, h("a", { href: `#/record/${list.object_type}/${encodeURIComponent(id)}` }, id)),
        h("td", { class: "row-actions" }, canWrite ? h("button", { type: "button", class: "danger remove", onclick: () => removeMember(list, id) }, "Remove") : null)))))
        : h("p", { class: "muted" }, "No members."),
      h("div", { class: "pager" },
        cursor ? h("button", { type: "button", onclick: () => showMembers(list, null) }, "← First page") : null,
        page.next_cursor ? h("button", { type: "button", onclick: () => showMembers(list, page.next_cursor) }, "Next →") : null),
      canWrite ? h("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); if (removeInput.value.trim()) removeMember(list, removeInput.value.trim()); } },
        field("Remove a member by id", removeInput),
        h("div", { class: "field buttons" }, h("span", { class: "label" }, " "), h("button", { type: "submit", class: "danger" }, "Remove"))) : null);
  }

  async function removeMember(list, id) {
    const done = await attempt(`Removing ${id}`, () => del(ws(`/segments/${encodeURIComponent(list.id)}/members/${encodeURIComponent(id)}`)));
    if (done === undefined) return;
    notify(`Removed ${id} from “${list.name}”. The record itself is not deleted.`);
    const stillThere = async () => (await get(ws(`/segments/${encodeURIComponent(list.id)}/members/${encodeURIComponent(id)}`))).member;
    // The removal is applied by the stream moments later: wait for it so the list below is right.
    for (let i = 0; i < 20 && await stillThere().catch(() => false); i += 1) await new Promise((r) => setTimeout(r, 250));
    await load();
    const fresh = lists.find((l) => l.id === list.id) || list;
    await showMembers(fresh, null);
  }

  async function load() {
    const answer = await attempt("Loading static segments", () => get(ws("/segments?sort=name")));
    if (!answer) return;
    lists = answer.segments.filter((s) => s.kind === "static");
    draw();
  }

  fill(root, h("h1", {}, "Static segments"),
    h("p", { class: "muted" }, "A static segment is a list: its members are the records you import, and rules never change it. Removing a member or deleting the list never deletes records."),
    canWrite ? null : h("p", { class: "muted" }, "Only admins can create lists, import or remove members."),
    table, membersPanel, canWrite ? importForm : null, canWrite ? createForm : null);
  await load();
  syncTarget();
}
