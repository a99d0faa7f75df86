// Chat assignment: the workspace's ordered rules "contact in segment S -> team member or group" (first
// match wins) and the groups, edited as one document and saved with the version it was read at, so two
// people editing at once cannot silently overwrite each other (409 version_conflict).
import { ApiProblem, get, put, session, ws } from "./api.js";
import { busy, fill, h, notify } from "./ui.js";

export async function render(root) {
  const canWrite = session.me.role !== "agent";
  const [doc, segments, team] = await busy("Loading the assignment rules", Promise.all([
    get(ws("/assignment-rules")),
    get(ws("/segments?object_type=contact")).then((r) => r.segments),
    get(ws("/team")).then((r) => r.members).catch(() => null),
  ]));
  const state = {
    version: doc.version,
    rules: doc.rules.map((r) => ({ id: r.id, segment_id: r.segment_id, kind: r.assign_to.group !== undefined ? "group" : "member",
      target: r.assign_to.group ?? r.assign_to.member ?? "" })),
    groups: Object.entries(doc.groups || {}).map(([name, members]) => ({ name, members: [...members] })),
  };
  const members = team ? team.map((m) => m.name) : [];
  const segmentName = new Map(segments.map((s) => [s.id, s.name]));
  const rulesBox = h("div", { id: "assignment-rules" });
  const groupsBox = h("div", { id: "assignment-groups" });
  const problemsBox = h("div", { class: "rule-problems", role: "alert" });
  const memberList = h("datalist", { id: "team-members" }, members.map((m) => h("option", { value: m })));

  function newId() {
    const taken = new Set(state.rules.map((r) => r.id));
    let n = state.rules.length + 1;
    while (taken.has(`rule-${n}`)) n += 1;
    return `rule-${n}`;
  }

  function targetControl(rule, i) {
    if (rule.kind === "group") {
      return h("select", { class: "assign-target", "aria-label": `Rule ${i + 1}: group`, disabled: !canWrite,
        onchange: (e) => { rule.target = e.target.value; } },
      h("option", { value: "" }, "(choose a group)"),
      state.groups.filter((g) => g.name).map((g) => h("option", { value: g.name, selected: g.name === rule.target }, g.name)));
    }
    if (team) {
      const known = members.includes(rule.target) || !rule.target;
      return h("select", { class: "assign-target", "aria-label": `Rule ${i + 1}: team member`, disabled: !canWrite,
        onchange: (e) => { rule.target = e.target.value; } },
      h("option", { value: "" }, "(choose a team member)"),
      known ? null : h("option", { value: rule.target, selected: true }, `${rule.target} (not in the team list)`),
      team.map((m) => h("option", { value: m.name, selected: m.name === rule.target }, m.role ? `${m.name} (${m.role})` : m.name)));
    }
    return h("input", { type: "text", class: "assign-target", "aria-label": `Rule ${i + 1}: team member`, value: rule.target,
      list: "team-members", disabled: !canWrite, oninput: (e) => { rule.target = e.target.value.trim(); } });
  }

  function drawRules() {
    const move = (i, by) => {
      const [rule] = state.rules.splice(i, 1);
      state.rules.splice(i + by, 0, rule);
      drawRules();
    };
    const rows = state.rules.map((rule, i) => h("tr", { dataset: { path: `/rules/${i}` } },
      h("td", { class: "num" }, String(i + 1)),
      h("td", {}, h("select", { class: "assign-segment", "aria-label": `Rule ${i + 1}: segment`, disabled: !canWrite,
        onchange: (e) => { rule.segment_id = e.target.value; } },
      h("option", { value: "" }, "(choose a contact segment)"),
      rule.segment_id && !segmentName.has(rule.segment_id) ? h("option", { value: rule.segment_id, selected: true }, `${rule.segment_id} (deleted, or hidden from you)`) : null,
      segments.map((s) => h("option", { value: s.id, selected: s.id === rule.segment_id }, s.name)))),
      h("td", {}, h("div", { class: "inline-controls" },
        h("select", { class: "assign-kind", "aria-label": `Rule ${i + 1}: assign to`, disabled: !canWrite,
          onchange: (e) => { rule.kind = e.target.value; rule.target = ""; drawRules(); } },
        h("option", { value: "member", selected: rule.kind === "member" }, "team member"),
        h("option", { value: "group", selected: rule.kind === "group" }, "group (in turn)")),
        targetControl(rule, i)),
      h("div", { class: "problems" })),
      h("td", { class: "order" }, canWrite ? h("div", { class: "actions" },
        h("button", { type: "button", class: "move-up", "aria-label": `Move rule ${i + 1} up`, disabled: i === 0, onclick: () => move(i, -1) }, "↑"),
        h("button", { type: "button", class: "move-down", "aria-label": `Move rule ${i + 1} down`, disabled: i === state.rules.length - 1, onclick: () => move(i, 1) }, "↓"),
        h("button", { type: "button", class: "remove danger", onclick: () => { state.rules.splice(i, 1); drawRules(); } }, "Remove")) : null)));
    fill(rulesBox,
      state.rules.length
        ? h("table", { class: "assign-table" },
          h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), h("th", {}, "When the contact is in"), h("th", {}, "Assign the conversation to"), h("th", {}, canWrite ? "Order" : ""))),
          h("tbody", {}, rows))
        : h("p", { class: "muted" }, "No rules: every new conversation stays unassigned."),
      canWrite ? h("div", { class: "toolbar" }, h("button", { type: "button", class: "add-rule", onclick: () => {
        state.rules.push({ id: newId(), segment_id: "", kind: "member", target: "" }); drawRules();
      } }, "+ Rule")) : null);
  }

  function drawGroups() {
    const cards = state.groups.map((group, i) => {
      const name = h("input", { type: "text", class: "group-name", "aria-label": `Group ${i + 1}: name`, value: group.name, disabled: !canWrite,
        onchange: (e) => {
          const old = group.name;
          group.name = e.target.value.trim();
          for (const rule of state.rules) if (rule.kind === "group" && rule.target === old) rule.target = group.name;
          drawRules();
        } });
      const picker = team
        ? h("div", { class: "inline-controls" }, team.map((m) => h("label", { class: "inline" },
          h("input", { type: "checkbox", value: m.name, checked: group.members.includes(m.name), disabled: !canWrite, onchange: (e) => {
            group.members = e.target.checked ? [...group.members, m.name] : group.members.filter((x) => x !== m.name);
          } }), ` ${m.name}`)))
        : h("input", { type: "text", class: "wide", "aria-label": `Group ${i + 1}: members, separated by commas`, value: group.members.join(", "),
          disabled: !canWrite, oninput: (e) => { group.members = e.target.value.split(",").map((s) => s.trim()).filter(Boolean); } });
      return h("div", { class: "group-card", dataset: { path: `/groups/${group.name}` } },
        h("div", { class: "inline-controls" }, h("label", {}, "Group ", name),
          h("span", { class: "spacer" }),
          canWrite ? h("button", { type: "button", class: "danger", onclick: () => { state.groups.splice(i, 1); drawGroups(); drawRules(); } }, "Remove group") : null),
        h("p", { class: "muted small" }, "Members, who take conversations in turn:"), picker,
        h("div", { class: "problems" }));
    });
    // The team list declares each member's group: offer those groups ready-made.
    const declared = new Map();
    for (const m of team || []) if (m.group) declared.set(m.group, [...(declared.get(m.group) || []), m.name]);
    const taken = new Set(state.groups.map((g) => g.name));
    fill(groupsBox, cards.length ? cards : h("p", { class: "muted" }, "No groups yet."),
      canWrite ? h("div", { class: "toolbar" }, h("button", { type: "button", class: "add-group", onclick: () => {
        state.groups.push({ name: `group-${state.groups.length + 1}`, members: [] }); drawGroups(); drawRules();
      } }, "+ Group"),
      [...declared].filter(([name]) => !taken.has(name)).map(([name, names]) => h("button", { type: "button", class: "add-team-group",
        title: names.join(", "), onclick: () => { state.groups.push({ name, members: names }); drawGroups(); drawRules(); } },
      `+ "${name}" from the team list (${names.length})`))) : null);
  }

  function document_() {
    return {
      version: state.version,
      rules: state.rules.map((r) => ({ id: r.id, segment_id: r.segment_id, assign_to: { [r.kind]: r.target } })),
      groups: Object.fromEntries(state.groups.map((g) => [g.name, g.members])),
    };
  }

  /** Problems name JSON pointers such as /rules/2/segment_id or /groups/sales: show each at its row. */
  function showProblems(problems) {
    for (const el of root.querySelectorAll(".invalid")) el.classList.remove("invalid");
    for (const el of root.querySelectorAll(".problems")) fill(el);
    fill(problemsBox);
    for (const p of problems) {
      const match = /^\/(rules\/\d+|groups\/[^/]+)/.exec(p.path || "");
      const target = match && [...root.querySelectorAll("[data-path]")].find((el) => el.dataset.path === `/${match[1]}`);
      if (target) target.classList.add("invalid");
      (target ? target.querySelector(".problems") : problemsBox).append(h("p", { class: "problem" }, p.message));
    }
  }

  /** What is missing before a save can work, in plain words, with the JSON pointer of where to show it. */
  function missingParts() {
    const problems = [];
    state.rules.forEach((r, i) => {
      if (!r.segment_id) problems.push({ path: `/rules/${i}`, message: "Choose the segment this rule looks at." });
      if (!r.target) problems.push({ path: `/rules/${i}`, message: r.kind === "group" ? "Choose a group." : "Choose a team member." });
    });
    const names = new Set();
    for (const g of state.groups) {
      if (!g.name) problems.push({ path: "/groups/", message: "Every group needs a name." });
      else if (names.has(g.name)) problems.push({ path: `/groups/${g.name}`, message: "Two groups have this name." });
      else if (!g.members.length) problems.push({ path: `/groups/${g.name}`, message: "Tick at least one member." });
      names.add(g.name);
    }
    return problems;
  }

  async function save() {
    const missing = missingParts();
    if (missing.length) {
      showProblems(missing);
      notify(`Not saved: ${missing.length === 1 ? "one thing is" : `${missing.length} things are`} missing, marked below.`, "error");
      return;
    }
    try {
      const saved = await busy("Saving the assignment rules", put(ws("/assignment-rules"), document_()));
      state.version = saved.version;
      showProblems([]);
      notify("Saved: new conversations are assigned by these rules from now on.");
    } catch (err) {
      if (err instanceof ApiProblem && err.code === "version_conflict") {
        showProblems([]);
        fill(problemsBox, h("p", { class: "problem" }, "Someone else saved the rules after you opened them. ",
          h("button", { type: "button", class: "link", onclick: () => render(root) }, "Reload their version"),
          " and make your change again."));
        notify("Not saved: someone else changed the rules in the meantime.", "error");
        return;
      }
      if (err instanceof ApiProblem && Array.isArray(err.body.problems) && err.body.problems.length) {
        showProblems(err.body.problems);
        notify("Not saved: the rules have problems, marked below.", "error");
        return;
      }
      notify(err.userMessage || String(err), "error");
    }
  }

  drawRules();
  drawGroups();
  fill(root,
    h("h1", {}, "Chat assignment"),
    h("p", { class: "muted" }, "A new conversation goes to the first rule whose segment the contact is in at that moment. ",
      "A group hands conversations to its members in turn."),
    canWrite ? null : h("p", { class: "muted" }, "Only admins can change these rules."),
    problemsBox,
    h("section", { class: "panel" }, h("h2", {}, "Rules, first match wins"), rulesBox),
    h("section", { class: "panel" }, h("h2", {}, "Groups"), groupsBox),
    memberList,
    canWrite ? h("div", { class: "actions" }, h("button", { type: "button", class: "primary save-rules", onclick: save }, "Save rules")) : null);
}
