/* The engagement dashboard: reads our own JSON API, draws with charts.js. Data only ever
   reaches the page through textContent and attributes, never as HTML. */
"use strict";
(function () {
  const view = document.getElementById("view");
  const login = document.getElementById("login");
  const controls = {
    range: document.getElementById("range"),
    tag: document.getElementById("tag"),
    search: document.getElementById("search"),
  };
  const TOKEN_KEY = "smtpapi-milter-admin-token";
  const PER_PAGE = 50;
  const numbers = new Intl.NumberFormat();
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  // [sort key and data-stat, heading, what it counts (the heading's tooltip)]
  const STATS = [
    ["injections", "Injections", "recipient copies the milter let through"],
    ["delivered", "Delivered", "accepted by the receiving server (from the MTA's log)"],
    ["delivery_rate", "Delivery rate", "delivered ÷ injections"],
    ["bounced", "Bounced", "refused for good by the receiving server"],
    ["unique_opens", "Unique opens", "people who opened"],
    ["delivered_open_rate", "Open rate", "unique opens ÷ delivered"],
    ["unique_clicks", "Unique clicks", "people who clicked"],
    ["delivered_click_rate", "Click rate", "unique clicks ÷ delivered"],
    ["open_rate", "Opens ÷ injected", "unique opens ÷ injections"],
    ["click_rate", "Clicks ÷ injected", "unique clicks ÷ injections"],
    ["unsubscribes", "Unsubscribes", "people who unsubscribed (one-click or the sender's link)"],
    ["unsubscribe_rate", "Unsubscribe rate", "unsubscribes ÷ delivered"],
    ["opens", "Opens", "every open by people"],
    ["clicks", "Clicks", "every click by people"],
    ["machine_opens", "Machine opens", "prefetches and bots"],
    ["machine_clicks", "Machine clicks", "link scanners and bots"],
  ];
  const COLUMNS = [["campaign", "Campaign"], ...STATS, ["recent", "Last event"]];
  const CATEGORIES = ["hard", "soft", "block", "admin", "undetermined"];
  let current = 0; // the newest render; older answers are dropped
  let tagsLoaded = false;

  class AuthNeeded extends Error {}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function el(name, attrs, ...children) {
    const node = document.createElement(name);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // --- where we are: #/ or #/campaign/ID, then ?range=&tag=&search=&sort=&order=&page=
  function readState() {
    const hash = location.hash.slice(1) || "/";
    const cut = hash.indexOf("?");
    const path = cut < 0 ? hash : hash.slice(0, cut);
    const params = new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1));
    return {
      campaign: path.startsWith("/campaign/") ? decodeURIComponent(path.slice(10)) : null,
      range: params.get("range") || "30d",
      tag: params.get("tag") || "",
      search: params.get("search") || "",
      sort: params.get("sort") || "recent",
      order: params.get("order") || "",
      page: Math.max(1, parseInt(params.get("page"), 10) || 1),
    };
  }

  function hashFor(state) {
    const params = new URLSearchParams();
    if (state.range !== "30d") params.set("range", state.range);
    for (const key of ["tag", "search", "order"]) if (state[key]) params.set(key, state[key]);
    if (state.sort !== "recent") params.set("sort", state.sort);
    if (state.page > 1) params.set("page", state.page);
    const path = state.campaign === null ? "/" : "/campaign/" + encodeURIComponent(state.campaign);
    const query = params.toString();
    return "#" + path + (query ? "?" + query : "");
  }

  function go(changes, replace) {
    const state = Object.assign(readState(), changes);
    history[replace ? "replaceState" : "pushState"](null, "", hashFor(state));
    render();
  }

  async function api(path, params) {
    const url = new URL("../api/v1/" + path, location.href);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
    }
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(url, { headers, cache: "no-store" });
    if (response.status === 401) throw new AuthNeeded();
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, body.error || `HTTP ${response.status}`);
    return body;
  }

  function scopeOf(state) {
    return { since: state.range === "all" ? "" : state.range, tag: state.tag };
  }

  const count = (n) => numbers.format(n);
  const rate = (r) => (r === null ? "—" : percent.format(r));
  const when = (t) => new Date(t * 1000).toLocaleString();
  const campaignName = (id) => (id === "" ? "(no campaign id)" : id);
  const shown = (key, value) => (key.endsWith("_rate") ? rate(value) : count(value));

  function card(stat, label, value, note) {
    return el("div", { class: "card" }, el("div", { class: "label", text: label }),
      el("div", { class: "value", "data-stat": stat, text: value }),
      note ? el("div", { class: "sub" }, note) : null);
  }

  // "12.5% of delivered · 10% of injected": each figure in its own data-stat span.
  function notes(t, parts) {
    const spans = parts.map(([key, after]) =>
      [el("span", { "data-stat": key, text: rate(t[key]) }), ` ${after}`]);
    return el("span", {}, ...spans.flatMap((s, i) => (i ? [" · ", ...s] : s)));
  }

  // "one-click 3 · link 2 · 0.4% of delivered": the two ways counted apart, then the rate.
  function unsubscribeNotes(t) {
    const ways = [["list_unsubscribes", "one-click"], ["link_unsubscribes", "link"]];
    return el("span", {}, ...ways.flatMap(([key, label]) => [`${label} `,
      el("span", { "data-stat": key, text: count(t[key]) }), " · "]),
      el("span", { "data-stat": "unsubscribe_rate", text: rate(t.unsubscribe_rate) }),
      " of delivered");
  }

  function cards(t) {
    const split = el("span", {}, ...["hard", "soft", "block"].flatMap((c, i) => [
      i ? " · " : "", `${c} `, el("span", { "data-stat": `${c}_bounces`,
        text: count(t[`${c}_bounces`]) })]));
    return el("section", { class: "cards", "aria-label": "Totals" },
      card("injections", "Injections", count(t.injections)),
      card("delivered", "Delivered", count(t.delivered),
        notes(t, [["delivery_rate", "of injected"]])),
      card("delayed", "Delayed", count(t.delayed), "temporary failures"),
      card("bounced", "Bounced", count(t.bounced), split),
      card("unique_opens", "Unique opens", count(t.unique_opens), notes(t,
        [["delivered_open_rate", "of delivered"], ["open_rate", "of injected"]])),
      card("unique_clicks", "Unique clicks", count(t.unique_clicks), notes(t,
        [["delivered_click_rate", "of delivered"], ["click_rate", "of injected"]])),
      card("unsubscribes", "Unsubscribes", count(t.unsubscribes), unsubscribeNotes(t)),
      card("out_of_band_bounces", "Out-of-band bounces", count(t.out_of_band_bounces),
        "mailed back to the return path"),
      card("spam_complaints", "Spam complaints", count(t.spam_complaints),
        notes(t, [["spam_complaint_rate", "of delivered"]])),
      card("opens", "Opens", count(t.opens)),
      card("clicks", "Clicks", count(t.clicks)),
      card("machine_opens", "Machine opens", count(t.machine_opens), "prefetches, bots"),
      card("machine_clicks", "Machine clicks", count(t.machine_clicks), "scanners, bots"));
  }

  // --- the campaign list
  async function renderList(state, ticket) {
    const body = await api("campaigns", Object.assign(scopeOf(state), {
      search: state.search, sort: state.sort, order: state.order,
      page: state.page, per_page: PER_PAGE,
    }));
    if (ticket !== current) return;
    document.title = "Engagement · smtpapi-milter";
    if (!body.total) {
      view.replaceChildren(emptyState(state, body.any_events));
      return;
    }
    view.replaceChildren(
      el("h2", { text: `${count(body.total)} campaign${body.total === 1 ? "" : "s"}` }),
      cards(body.totals), campaignTable(body.results, state), pager(body, state));
  }

  function emptyState(state, anyEvents) {
    if (!anyEvents) {
      return el("section", { class: "empty", id: "empty" },
        el("h2", { text: "No engagement yet" }),
        el("p", { text: "The event store holds no events. Injections appear here once the " +
          "milter tracks mail; opens and clicks once recipients read it and follow its links." }));
    }
    const filters = [];
    if (state.search) filters.push(`matching “${state.search}”`);
    if (state.tag) filters.push(`tagged “${state.tag}”`);
    const range = controls.range.selectedOptions[0].textContent.toLowerCase();
    return el("section", { class: "empty", id: "empty" },
      el("h2", { text: "No campaigns match" }),
      el("p", { text: `No campaign ${filters.concat([`with events in the ${range}`]).join(", ")}. ` +
        "Try a longer time range, another tag or a shorter search." }));
  }

  function campaignTable(rows, state) {
    const head = el("tr", {}, ...COLUMNS.map(([key, label, about]) => {
      const active = state.sort === key;
      const descending = active ? state.order !== "asc" && (state.order === "desc" ||
        key !== "campaign") : null;
      const button = el("button", { type: "button", text: label, title: about });
      button.addEventListener("click", () => {
        const flip = active ? (descending ? "asc" : "desc") : "";
        go({ sort: key, order: flip, page: 1 });
      });
      return el("th", { scope: "col", "aria-sort": active ? (descending ? "descending" :
        "ascending") : null }, button);
    }));
    const body = el("tbody", {}, ...rows.map((row) => el("tr", {},
      el("th", { scope: "row" }, el("a", {
        href: hashFor(Object.assign(readState(), { campaign: row.campaign_id, page: 1 })),
        class: row.campaign_id === "" ? "unnamed" : null, text: campaignName(row.campaign_id),
      })),
      ...STATS.map(([key]) => el("td", { "data-stat": key, text: shown(key, row[key]) })),
      el("td", { "data-stat": "last_event", text: when(row.last_event) }))));
    return el("div", { class: "scroll" }, el("table", { id: "campaigns" },
      el("thead", {}, head), body));
  }

  function pager(body, state) {
    const pages = Math.max(1, Math.ceil(body.total / body.per_page));
    const first = (body.page - 1) * body.per_page + 1;
    const last = Math.min(body.total, body.page * body.per_page);
    const button = (label, page, disabled) => {
      const node = el("button", { type: "button", text: label, disabled });
      node.addEventListener("click", () => go({ page }));
      return node;
    };
    return el("nav", { class: "pager", "aria-label": "Pages" },
      button("Previous", state.page - 1, body.page <= 1),
      el("span", { id: "page-info", text:
        `${count(first)}–${count(last)} of ${count(body.total)} · page ${count(body.page)} of ${count(pages)}` }),
      button("Next", state.page + 1, body.page >= pages));
  }

  // --- one campaign
  async function renderCampaign(state, ticket) {
    const base = "campaigns/" + encodeURIComponent(state.campaign);
    const scope = scopeOf(state);
    const tzOffset = -new Date().getTimezoneOffset() * 60;
    let summary;
    try {
      summary = await api(base, scope);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) throw error;
      if (ticket !== current) return;
      view.replaceChildren(back(state), el("h2", { text: campaignName(state.campaign) }),
        el("section", { class: "empty", id: "empty" }, el("p", {
          text: "No events of this campaign in the selected time range and tag." })));
      return;
    }
    const [series, links, floods, bounces] = await Promise.all([
      api(base + "/timeseries", Object.assign({ tz_offset: tzOffset }, scope)),
      api(base + "/links", Object.assign({ limit: 20 }, scope)),
      api("floods", { campaign: state.campaign, limit: 1000 }),
      api(base + "/bounces", Object.assign({ limit: 20 }, scope)),
    ]);
    if (ticket !== current) return;
    const s = summary.results;
    document.title = `${campaignName(s.campaign_id)} · Engagement`;
    view.replaceChildren(back(state),
      el("h2", { id: "campaign-name", class: s.campaign_id === "" ? "unnamed" : null,
        text: campaignName(s.campaign_id) }),
      el("p", { class: "note", text: `Events from ${when(s.first_event)} to ${when(s.last_event)}` }),
      ...[cards(s), outcomeBar(s), timeCharts(series), bouncePanels(bounces),
        linkTable(links.results, floods.results)].filter(Boolean)); // no panel: nothing shown
  }

  // What became of the injected mail: delivered, bounced by category, still open.
  function outcomeBar(s) {
    const parts = [{ cls: "delivered", label: "Delivered", value: s.delivered }]
      .concat(CATEGORIES.map((c) => ({ cls: c, label: `${c} bounces`, value: s[`${c}_bounces`] })));
    if (!s.delivered && !s.bounced) return null;
    const known = parts.reduce((sum, p) => sum + p.value, 0);
    const total = Math.max(s.injections, known);
    parts.push({ cls: "pending", label: "No outcome yet", value: total - known });
    return el("figure", { class: "panel outcome", id: "outcomes" },
      el("figcaption", {}, el("span", { text: "Outcomes of injected mail" }),
        el("span", { class: "legend" }, ...parts.filter((p) => p.value > 0).map((p) =>
          el("span", { class: `key ${p.cls}`, text: `${p.label} ${count(p.value)}` })))),
      Charts.stack(parts, total));
  }

  function bouncePanels(b) {
    if (!b.by_class.length) return null;
    const most = b.by_class[0].bounces;
    const classes = b.by_class.map((c) => el("tr", { "data-class": c.bounce_class },
      el("th", { scope: "row" }, el("span", { class: `key ${c.category}` }),
        `${c.bounce_class} ${c.name}`),
      el("td", { class: "category", text: c.category }),
      el("td", { class: "meter-cell" }, Charts.stack([{ cls: c.category, label: c.name,
        value: c.bounces }], most)),
      el("td", { "data-stat": "bounces", text: count(c.bounces) })));
    const domains = b.by_domain.map((d) => el("tr", {},
      el("th", { scope: "row", text: d.domain || "(none)" }),
      el("td", { class: "meter-cell" }, Charts.stack(CATEGORIES.map((c) => ({ cls: c,
        label: `${c} bounces`, value: d[`${c}_bounces`] })), b.by_domain[0].bounces)),
      el("td", { "data-stat": "bounces", text: count(d.bounces) }),
      ...["hard", "soft", "block"].map((c) => el("td", { "data-stat": `${c}_bounces`,
        text: count(d[`${c}_bounces`]) }))));
    const table = (id, heading, columns, rows) => el("section", { class: "panel", id },
      el("h3", { text: heading }), el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ...columns.map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...rows))));
    return el("section", { class: "charts" },
      table("bounce-classes", "Bounces by class", ["Class", "Category", "", "Bounces"], classes),
      table("bounce-domains", "Bounces by recipient domain",
        ["Domain", "", "Bounces", "Hard", "Soft", "Block"], domains));
  }

  function back(state) {
    return el("a", { class: "back", href: hashFor(Object.assign({}, state, { campaign: null })),
      text: "← All campaigns" });
  }

  function bucketName(seconds) {
    const units = [[604800, "week"], [86400, "day"], [3600, "hour"], [60, "minute"]];
    for (const [size, name] of units) {
      if (seconds % size === 0) {
        const n = seconds / size;
        return n === 1 ? name : `${n} ${name}s`;
      }
    }
    return `${seconds} seconds`;
  }

  function timeCharts(series) {
    const points = series.results;
    const daily = series.bucket >= 86400;
    const format = daily ? { month: "short", day: "numeric" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
    const label = (p) => new Date(p.start * 1000).toLocaleString([], format);
    const describe = (p) => new Date(p.start * 1000).toLocaleString();
    const per = bucketName(series.bucket);
    const figure = (id, heading, people, machines) => el("figure", { class: "panel", id },
      el("figcaption", {}, el("span", { text: `${heading} per ${per}` }), legend()),
      Charts.columns(points, [
        { key: people, label: "People", cls: "human" },
        { key: machines, label: "Machines", cls: "machine" },
      ], { label, describe, name: `${heading} per ${per}` }));
    return el("section", { class: "charts" },
      figure("opens-chart", "Opens", "opens", "machine_opens"),
      figure("clicks-chart", "Clicks", "clicks", "machine_clicks"));
  }

  function legend() {
    return el("span", { class: "legend" },
      el("span", { class: "key human", text: "People" }),
      el("span", { class: "key machine", text: "Machines" }));
  }

  // Repeats the tracker's flood guard counted instead of storing, per target URL.
  function floodsByUrl(floods) {
    const byUrl = new Map();
    for (const f of floods) {
      const seen = byUrl.get(f.target_link_url) || { folded: 0, abused: false };
      seen.folded += f.folded;
      seen.abused = seen.abused || f.abused_at !== null;
      byUrl.set(f.target_link_url, seen);
    }
    return byUrl;
  }

  function floodMark(flood) {
    if (!flood || !flood.abused) return null;
    return el("div", { class: "flood", "data-folded": flood.folded,
      title: "More requests than the tracker's hourly limit: repeats were redirected but " +
        "counted, not stored as clicks",
      text: `Flooded: ${count(flood.folded)} repeated requests not stored` });
  }

  function linkTable(links, floods) {
    const flooded = floodsByUrl(floods || []);
    if (!links.length) {
      return el("section", { class: "panel", id: "links" }, el("h3", { text: "Links" }),
        el("p", { class: "note", text: "No clicks in this range." }));
    }
    const max = Math.max(...links.map((l) => l.clicks + l.machine_clicks));
    const rows = links.map((l) => el("tr", {},
      el("th", { scope: "row" },
        el("div", { class: "link-name", text: l.target_link_name || "(no name)" }),
        el("a", { class: "link-url", href: l.target_link_url, rel: "noreferrer noopener",
          target: "_blank", text: l.target_link_url }),
        floodMark(flooded.get(l.target_link_url))),
      el("td", { class: "meter-cell" }, Charts.meter(l.clicks, l.machine_clicks, max)),
      el("td", { "data-stat": "clicks", text: count(l.clicks) }),
      el("td", { "data-stat": "unique_clicks", text: count(l.unique_clicks) }),
      el("td", { "data-stat": "machine_clicks", text: count(l.machine_clicks) })));
    return el("section", { class: "panel", id: "links" },
      el("h3", {}, el("span", { text: "Top links" }), legend()),
      el("div", { class: "scroll" }, el("table", {},
        el("thead", {}, el("tr", {}, ...["Link", "", "Clicks", "Unique clicks", "Machine clicks"]
          .map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...rows))));
  }

  // --- plumbing
  function syncControls(state) {
    controls.range.value = state.range;
    if (![...controls.tag.options].some((o) => o.value === state.tag)) {
      controls.tag.append(el("option", { value: state.tag, text: state.tag }));
    }
    controls.tag.value = state.tag;
    if (document.activeElement !== controls.search) controls.search.value = state.search;
  }

  async function loadTags() {
    const body = await api("tags");
    for (const tag of body.results) {
      if (![...controls.tag.options].some((o) => o.value === tag)) {
        controls.tag.append(el("option", { value: tag, text: tag }));
      }
    }
    tagsLoaded = true;
  }

  async function render() {
    const ticket = ++current;
    const state = readState();
    syncControls(state);
    view.setAttribute("aria-busy", "true");
    try {
      if (!tagsLoaded) await loadTags();
      if (state.campaign === null) await renderList(state, ticket);
      else await renderCampaign(state, ticket);
      if (ticket === current) syncControls(state);
    } catch (error) {
      if (ticket !== current) return;
      if (error instanceof AuthNeeded) {
        askForToken();
        return;
      }
      view.replaceChildren(el("section", { class: "empty error", id: "error" },
        el("h2", { text: "Cannot show engagement" }), el("p", { text: error.message })));
    } finally {
      if (ticket === current) view.removeAttribute("aria-busy");
    }
  }

  function askForToken() {
    const error = document.getElementById("login-error");
    error.hidden = !sessionStorage.getItem(TOKEN_KEY);
    error.textContent = "That token was not accepted.";
    sessionStorage.removeItem(TOKEN_KEY);
    view.replaceChildren();
    login.hidden = false;
    document.getElementById("token").focus();
  }

  login.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    login.hidden = true;
    render();
  });
  document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
  controls.range.addEventListener("change", () => go({ range: controls.range.value, page: 1 }));
  controls.tag.addEventListener("change", () => go({ tag: controls.tag.value, page: 1 }));
  let typing = 0;
  controls.search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => go({ search: controls.search.value.trim(), page: 1,
      campaign: null }, true), 250);
  });
  window.addEventListener("hashchange", render);
  render();
})();
