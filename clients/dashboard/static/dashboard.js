// The Turnstile control room: one venue live (ReportService.WatchLive through the app's
// /api/live server-sent events) and, for a role that may, its controls (/api/control/*).
// Plain script, no build step, no library; the page's markup is static/index.html and
// every element it adds is built with the DOM API (no HTML from data).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const STALE_MS = 20000;            // the node sends a view at least every 15 s
  const REOPEN_MS = 3000;            // a stream the browser lost is opened again after this

  const state = {
    me: null,          // /api/me
    venue: "",
    es: null,          // the EventSource
    reopen: 0,         // timer of the next stream
    view: null,        // the last LiveView
    controls: null,    // the last LiveControls (a view's, or a control's answer)
    lastAt: 0,         // Date.now() of the last view
    slotsDay: "",      // the day the slot picker holds
    slots: [],
    dirty: new Set(),  // inputs the user is editing: a view does not overwrite them
    zoneCards: new Map(),
    gateRows: new Map(),
  };

  // -- small helpers ---------------------------------------------------------------------
  function el(tag, cls, text, testid) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    if (testid) e.dataset.testid = testid;
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const num = (x) => Number(x || 0);
  const fmt = new Intl.NumberFormat("en-US");
  const int = (x) => fmt.format(num(x));
  const yuan = (fen) => {
    const f = num(fen);
    return (f < 0 ? "-" : "") + "\u00a5" + (Math.abs(f) / 100).toLocaleString("en-US",
      { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  };
  const secs = (iso) => (iso ? Date.parse(iso) / 1000 : NaN);
  function age(s) {
    if (!isFinite(s) || s < 0) s = 0;
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toLocaleTimeString("en-GB", { hour12: false });
  }
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  // -- talking to the app ----------------------------------------------------------------
  async function api(path, body) {
    const opts = body === undefined ? { credentials: "same-origin" } : {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json",
                 "X-CSRF-Token": state.me ? state.me.csrf : "" },
      body: JSON.stringify(body),
    };
    const r = await fetch(path, opts);
    let data = null;
    if (r.status !== 204) {
      try { data = await r.json(); } catch (e) { data = null; }
    }
    if (r.status === 401 && path !== "/login") showLogin("");
    return { ok: r.ok, status: r.status, data };
  }
  function problem(data, status) {
    if (!data) return "the dashboard answered " + status;
    const what = data.reason && data.reason !== data.code ? data.reason : data.code;
    return (what ? what + ": " : "") + (data.message || "");
  }

  let toastTimer = 0;
  function toast(text, bad) {
    const t = $("toast");
    t.textContent = text;
    t.classList.toggle("bad", !!bad);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 9000 : 4000);
  }

  async function control(kind, body, done) {
    const r = await api("/api/control/" + kind, Object.assign({ venue: state.venue }, body));
    if (!r.ok) {
      toast(problem(r.data, r.status), true);
      return false;
    }
    state.controls = r.data;
    toast(done, false);
    if (state.view) render(state.view);
    return true;
  }

  // -- login -----------------------------------------------------------------------------
  function showLogin(message) {
    stopStream();
    state.me = null;
    $("app").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-key").focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const input = $("login-key");
    const key = input.value.trim();
    input.value = "";                     // the key stays nowhere in the page
    $("login-error").textContent = "";
    const r = await api("/login", { key });
    if (!r.ok) {
      $("login-error").textContent = problem(r.data, r.status);
      return;
    }
    await boot();
  }

  async function logout() {
    await api("/logout", {});
    showLogin("Logged out.");
  }

  async function boot() {
    const r = await api("/api/me");
    if (!r.ok) {
      if (r.status !== 401) showLogin(problem(r.data, r.status));
      return;
    }
    state.me = r.data;
    $("login").hidden = true;
    $("app").hidden = false;
    $("principal").textContent = state.me.principal;
    $("role").textContent = state.me.role;
    document.body.classList.toggle("may-control", Object.values(state.me.controls).some(Boolean));
    const pick = $("venue");
    pick.replaceChildren(...state.me.venues.map((v) => { const o = el("option", "", v); o.value = v; return o; }));
    const wanted = new URLSearchParams(location.search).get("venue");
    state.venue = state.me.venues.includes(wanted) ? wanted : (state.me.venues[0] || "");
    pick.value = state.venue;
    pick.closest("label").hidden = state.me.venues.length < 2;
    buildVenueControls();
    clearVenue();
    openStream();
  }

  // -- the live stream -------------------------------------------------------------------
  function setLive(kind, text) {
    const box = $("live");
    box.dataset.state = kind;
    setText($("live-text"), text);
  }

  function stopStream() {
    clearTimeout(state.reopen);
    if (state.es) { state.es.close(); state.es = null; }
  }

  function openStream() {
    stopStream();
    if (!state.venue) { setLive("error", "no venue"); return; }
    setLive("connecting", "connecting");
    const es = new EventSource("/api/live?venue=" + encodeURIComponent(state.venue));
    state.es = es;
    es.onmessage = (e) => {
      state.lastAt = Date.now();
      $("stream-error").hidden = true;
      setLive("live", "live");
      render(JSON.parse(e.data));
    };
    es.addEventListener("logout", () => showLogin("Your session ended."));
    es.addEventListener("error", (e) => {
      if (e.data) {                          // the app's own report of a gRPC failure
        const err = JSON.parse(e.data);
        const banner = $("stream-error");
        banner.textContent = problem(err) + (err.retry_s !== null
          ? " \u2014 reconnecting in " + err.retry_s + " s" : "");
        banner.hidden = false;
        if (err.retry_s === null) {
          stopStream();
          if (err.code === "UNAUTHENTICATED") showLogin(problem(err));
          else setLive("error", "stopped");
        } else {
          setLive("reconnecting", "reconnecting");
        }
        return;
      }
      if (state.es !== es) return;           // the browser lost the connection to the app
      setLive("reconnecting", "reconnecting");
      if (es.readyState === EventSource.CLOSED) {
        state.reopen = setTimeout(async () => {
          const r = await api("/api/me");
          if (r.ok) openStream();
        }, REOPEN_MS);
      }
    });
  }

  setInterval(() => {
    if (!state.lastAt) return;
    const ago = (Date.now() - state.lastAt) / 1000;
    setText($("live-updated"), ago < 2 ? "just now" : age(ago) + " ago");
    if (ago * 1000 > STALE_MS && $("live").dataset.state === "live") setLive("stale", "stale");
  }, 1000);

  // -- rendering ---------------------------------------------------------------------------
  function clearVenue() {
    state.view = null;
    state.controls = null;
    state.lastAt = 0;
    state.slotsDay = "";
    state.zoneCards.clear();
    state.gateRows.clear();
    $("zones").replaceChildren();
    $("gates").replaceChildren();
    $("alerts").replaceChildren();
    $("sales").replaceChildren();
    $("sales-total").replaceChildren();
    setText($("live-updated"), "never");
  }

  function zoneControl(zoneId) {
    const zs = (state.controls && state.controls.zones) || [];
    return zs.find((z) => z.zone_id === zoneId) || { fill_pct: [], entries_per_minute: 0 };
  }

  function render(view) {
    state.view = view;
    if (view.controls && (!state.controls || view.controls.venue_id === state.venue)) {
      state.controls = view.controls;
    }
    setText($("day"), view.date ? view.venue_id + " \u00b7 " + view.date : view.venue_id);
    renderTotals(view);
    renderVenueControls(view);
    renderZones(view);
    renderAlerts(view);
    renderGates(view);
    renderSales(view);
    if (view.date && view.date !== state.slotsDay) loadSlots(view.date);
  }

  function renderTotals(view) {
    setText($("total-inside"), int(view.inside));
    const cap = view.zones.reduce((a, z) => a + num(z.live_capacity), 0);
    const limited = view.zones.every((z) => num(z.live_capacity) > 0);
    setText($("total-capacity"), cap ? "of " + int(cap) + (limited ? "" : " (some zones unlimited)") : "no limits");
    setText($("total-entries"), int(view.entries_today));
    const re = view.zones.reduce((a, z) => a + num(z.reentries_today), 0);
    const ex = view.zones.reduce((a, z) => a + num(z.exits_today), 0);
    setText($("total-reentries"), int(re) + " re-entries \u00b7 " + int(ex) + " exits");
    setText($("total-lastmin"), int(view.zones.reduce((a, z) => a + num(z.entries_last_minute), 0)));
    const net = view.sales.reduce((a, s) => a + num(s.net_fen), 0);
    const tickets = view.sales.reduce((a, s) => a + num(s.tickets), 0);
    setText($("total-net"), Math.abs(net) >= 1000000 ? "\u00a5" + int(Math.round(net / 100)) : yuan(net));
    setText($("total-tickets"), int(tickets) + " tickets, net");
    const up = view.gates.filter((g) => g.state === "GATE_UP").length;
    const down = view.gates.filter((g) => g.state === "GATE_DOWN").length;
    const off = view.gates.filter((g) => g.state === "GATE_OFFLINE").length;
    setText($("total-gates"), up + " / " + view.gates.length);
    setText($("total-gates-hint"), [down ? down + " down" : "", off ? off + " offline" : ""]
      .filter(Boolean).join(" \u00b7 ") || (up === view.gates.length ? "all up" : "some never heard from"));
    $("tile-alerts").classList.toggle("hot", view.alerts.length > 0);
    setText($("total-alerts"), String(view.alerts.length));
    setText($("total-alerts-hint"), view.alerts.length ? view.alerts[view.alerts.length - 1].message : "all quiet");
  }

  // the venue's sales and slot controls (built once, when the role may use them)
  function buildVenueControls() {
    const box = $("venue-controls");
    const may = state.me.controls;
    box.hidden = !may.sales;
    const group = $("venue-sales-group");
    group.querySelectorAll("button").forEach((b) => b.remove());
    const slotGroup = $("slot-group");
    slotGroup.querySelectorAll("button, select").forEach((b) => b.remove());
    slotGroup.hidden = !(may.sales && state.me.slots);
    if (!may.sales) return;
    const b = el("button", "danger", "Pause sales", "control-pause-venue");
    b.type = "button";
    b.addEventListener("click", () => {
      const paused = !(state.controls && state.controls.sales_paused);
      control("sales", { paused }, paused ? "Sales of " + state.venue + " paused"
                                          : "Sales of " + state.venue + " resumed");
    });
    group.append(b);
    if (!state.me.slots) return;
    const pick = el("select", "", null, "control-slot");
    pick.id = "control-slot";
    pick.setAttribute("aria-label", "Slot");
    pick.addEventListener("change", () => renderVenueControls(state.view));
    const sb = el("button", "", "Pause slot", "control-pause-slot");
    sb.type = "button";
    sb.addEventListener("click", () => {
      const slot = pick.value;
      if (!slot) return;
      const paused = !pausedSlots().includes(slot);
      control("sales", { slot, paused }, "Sales of slot " + slot + (paused ? " paused" : " resumed"));
    });
    slotGroup.append(pick, sb);
  }

  const pausedSlots = () => (state.controls && state.controls.paused_slots) || [];

  async function loadSlots(day) {
    state.slotsDay = day;
    if (!state.me.controls.sales || !state.me.slots) return;
    const r = await api("/api/slots?venue=" + encodeURIComponent(state.venue) + "&date=" + day);
    if (!r.ok) return;
    state.slots = r.data.slots;
    const pick = $("control-slot");
    const keep = pick.value;
    pick.replaceChildren(...state.slots.map((s) => {
      const hours = secs(s.end) - secs(s.start) >= 86400 ? "all day"
        : clock(s.start).slice(0, 5) + "\u2013" + clock(s.end).slice(0, 5);
      const o = el("option", "", s.zone_id + " \u00b7 " + hours + " \u00b7 " + int(s.sold) + " / " +
        int(s.capacity) + " sold \u00b7 " + s.slot_id);
      o.value = s.slot_id;
      return o;
    }));
    if (keep) pick.value = keep;
    renderVenueControls(state.view);
  }

  function renderVenueControls(view) {
    if (!view || !state.me.controls.sales) return;
    const c = state.controls || {};
    const paused = !!c.sales_paused;
    const st = $("venue-sales-state");
    setText(st, paused ? "PAUSED" : "selling");
    st.classList.toggle("off", paused);
    const b = document.querySelector('[data-testid="control-pause-venue"]');
    setText(b, paused ? "Resume sales" : "Pause sales");
    b.classList.toggle("danger", !paused);
    b.setAttribute("aria-pressed", String(paused));
    const sb = document.querySelector('[data-testid="control-pause-slot"]');
    if (sb && $("control-slot")) {
      const slotPaused = pausedSlots().includes($("control-slot").value);
      setText(sb, slotPaused ? "Resume slot" : "Pause slot");
      sb.setAttribute("aria-pressed", String(slotPaused));
    }
  }

  // one zone's card: built once, then updated in place (inputs keep focus and edits)
  function zoneCard(z) {
    let card = state.zoneCards.get(z.zone_id);
    if (card) return card;
    const id = z.zone_id;
    const root = el("article", "zone", null, "zone-" + id);
    const head = el("header", "zone-head");
    const name = el("h3", "", z.name || id);
    const badges = el("div", "badges");
    const paused = el("span", "badge paused", "SALES PAUSED", "zone-paused-" + id);
    const closed = el("span", "badge closed", "ENTRY CLOSED", "zone-closed-" + id);
    badges.append(paused, closed);
    head.append(name, badges);
    const big = el("div", "zone-big");
    const inside = el("span", "inside", "0", "zone-inside-" + id);
    const capWrap = el("span", "cap");
    const cap = el("span", "", "", "zone-capacity-" + id);
    capWrap.append(" / ", cap);
    const pct = el("span", "pct", "", "zone-fill-" + id);
    big.append(inside, capWrap, pct);
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    const ticks = el("div", "ticks");
    bar.append(fill, ticks);
    const stats = el("div", "zone-stats");
    const lastMin = el("b", "", "0", "zone-lastmin-" + id);
    const today = el("span", "muted");
    const l1 = el("span");
    l1.append(lastMin, " entries in the last minute");
    stats.append(l1, today);
    const spark = svg("svg", { class: "spark", viewBox: "0 0 240 48", preserveAspectRatio: "none",
                               role: "img", "data-testid": "zone-spark-" + id });
    const area = svg("path", { class: "spark-area" });
    const line = svg("polyline", { class: "spark-line" });
    spark.append(area, line);
    const sparkFoot = el("div", "spark-foot");
    const peak = el("span");
    sparkFoot.append(el("span", "", "entries per minute, last 60 min"), peak);
    root.append(head, big, bar, stats, spark, sparkFoot);
    card = { root, name, paused, closed, inside, cap, pct, fill, ticks, lastMin, today, spark,
             area, line, peak, controls: null };
    if (Object.values(state.me.controls).some(Boolean)) {
      card.controls = zoneControls(id);
      root.append(card.controls.box);
    }
    state.zoneCards.set(id, card);
    $("zones").append(root);
    return card;
  }

  function dirtyInput(input) {
    input.addEventListener("input", () => state.dirty.add(input));
    return input;
  }

  function zoneControls(id) {
    const may = state.me.controls;
    const box = el("div", "zone-controls controls");
    const out = { box };
    const row = el("div", "row");
    if (may.sales) {
      out.pause = el("button", "", "Pause sales", "control-pause-zone-" + id);
      out.pause.type = "button";
      out.pause.addEventListener("click", () => {
        const paused = !((state.controls && state.controls.paused_zones) || []).includes(id);
        control("sales", { zone: id, paused }, "Sales of zone " + id + (paused ? " paused" : " resumed"));
      });
      row.append(out.pause);
    }
    if (may.entry) {
      out.entry = el("button", "", "Close entry", "control-entry-zone-" + id);
      out.entry.type = "button";
      out.entry.addEventListener("click", () => {
        const closed = !((state.controls && state.controls.closed_zones) || []).includes(id);
        control("entry", { zone: id, closed }, "Entry to zone " + id + (closed ? " closed" : " reopened"));
      });
      row.append(out.entry);
    }
    if (row.children.length) box.append(row);
    if (may.capacity) {
      const f = el("form", "row");
      const lab = el("label", "", "Live capacity");
      out.capacity = dirtyInput(el("input", "", null, "control-capacity-" + id));
      Object.assign(out.capacity, { type: "number", min: "0", step: "1", title: "0: no limit" });
      lab.append(out.capacity);
      const set = el("button", "", "Set", "control-capacity-set-" + id);
      f.append(lab, set);
      f.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const v = Number(out.capacity.value);
        if (!Number.isInteger(v) || v < 0) { toast("Live capacity: a whole number, 0 for no limit", true); return; }
        if (await control("capacity", { zone: id, live_capacity: v },
                          "Live capacity of " + id + " set to " + (v ? int(v) : "no limit"))) {
          state.dirty.delete(out.capacity);
        }
      });
      box.append(f);
    }
    if (may.alerts) {
      const f = el("form", "row");
      const l1 = el("label", "", "Alert at %");
      out.fill = dirtyInput(el("input", "", null, "control-alerts-fill-" + id));
      Object.assign(out.fill, { type: "text", placeholder: "80, 95", inputMode: "numeric", size: 7 });
      l1.append(out.fill);
      const l2 = el("label", "", "per min");
      out.rate = dirtyInput(el("input", "", null, "control-alerts-rate-" + id));
      Object.assign(out.rate, { type: "number", min: "0", step: "1", title: "0: no rate alert" });
      l2.append(out.rate);
      const set = el("button", "", "Set", "control-alerts-set-" + id);
      f.append(l1, l2, set);
      f.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const parts = out.fill.value.split(/[\s,]+/).filter(Boolean);
        const levels = parts.map(Number);
        if (levels.some((n) => !Number.isInteger(n) || n < 0)) {
          toast("Alert levels: whole percentages, like 80, 95", true);
          return;
        }
        const rate = Number(out.rate.value || 0);
        if (!Number.isInteger(rate) || rate < 0) { toast("Rate: a whole number of entries per minute", true); return; }
        if (await control("alerts", { zone: id, fill_pct: levels, entries_per_minute: rate },
                          "Alerts of " + id + " set")) {
          state.dirty.delete(out.fill);
          state.dirty.delete(out.rate);
        }
      });
      box.append(f);
    }
    return out;
  }

  function levelsOf(zoneId) {
    const lv = (zoneControl(zoneId).fill_pct || []).map(Number).sort((a, b) => a - b);
    const warn = lv.length ? lv[0] : 80;
    const crit = lv.length > 1 ? lv[lv.length - 1] : Math.max(95, warn);
    return { lv, warn, crit };
  }

  function renderZones(view) {
    const seen = new Set();
    const c = state.controls || {};
    const hot = new Set(view.alerts.map((a) => a.zone_id));
    for (const z of view.zones) {
      seen.add(z.zone_id);
      const card = zoneCard(z);
      const inside = num(z.inside), cap = num(z.live_capacity);
      setText(card.name, z.name || z.zone_id);
      setText(card.inside, int(inside));
      setText(card.cap, cap ? int(cap) : "no limit");
      const { lv, warn, crit } = levelsOf(z.zone_id);
      const p = cap ? inside * 100 / cap : 0;
      setText(card.pct, cap ? (p < 10 && p > 0 ? p.toFixed(1) : Math.round(p)) + "%" : "");
      card.fill.style.width = Math.min(100, p) + "%";
      card.fill.className = "fill " + (!cap ? "none" : p >= crit ? "crit" : p >= warn ? "warn" : "ok");
      card.root.classList.toggle("unlimited", !cap);
      card.root.classList.toggle("alerting", hot.has(z.zone_id));
      const tickKey = cap ? lv.join(",") : "";
      if (card.ticks.dataset.levels !== tickKey) {
        card.ticks.dataset.levels = tickKey;
        card.ticks.replaceChildren(...(cap ? lv : []).map((l) => {
          const t = el("span", "tick");
          t.style.left = Math.min(100, l) + "%";
          t.title = l + "%";
          return t;
        }));
      }
      card.paused.hidden = !z.sales_paused;
      card.closed.hidden = !z.entry_closed;
      setText(card.lastMin, int(z.entries_last_minute));
      setText(card.today, int(z.entries_today) + " entries, " + int(z.reentries_today) +
        " re-entries, " + int(z.exits_today) + " exits today");
      drawSpark(card, (z.entries_per_minute || []).map(num));
      if (card.controls) {
        const k = card.controls;
        if (k.pause) {
          const zp = (c.paused_zones || []).includes(z.zone_id);
          setText(k.pause, zp ? "Resume sales" : "Pause sales");
          k.pause.setAttribute("aria-pressed", String(zp));
          k.pause.classList.toggle("on", zp);
        }
        if (k.entry) {
          const zc = (c.closed_zones || []).includes(z.zone_id);
          setText(k.entry, zc ? "Reopen entry" : "Close entry");
          k.entry.setAttribute("aria-pressed", String(zc));
          k.entry.classList.toggle("on", zc);
        }
        const zc = zoneControl(z.zone_id);
        if (k.capacity && !state.dirty.has(k.capacity) && document.activeElement !== k.capacity) {
          k.capacity.value = String(num(zc.live_capacity !== undefined ? zc.live_capacity : z.live_capacity));
        }
        if (k.fill && !state.dirty.has(k.fill) && document.activeElement !== k.fill) {
          k.fill.value = (zc.fill_pct || []).join(", ");
        }
        if (k.rate && !state.dirty.has(k.rate) && document.activeElement !== k.rate) {
          k.rate.value = String(num(zc.entries_per_minute));
        }
      }
    }
    for (const [id, card] of state.zoneCards) {
      if (!seen.has(id)) { card.root.remove(); state.zoneCards.delete(id); }
    }
  }

  function drawSpark(card, values) {
    const key = values.join(",");
    if (card.spark.dataset.values === key) return;
    card.spark.dataset.values = key;
    // 240 x 48 units, stretched to the card: a point per minute, the minute under way last
    const W = 240, H = 48, n = Math.max(values.length, 2);
    const max = Math.max(1, ...values);
    const pts = values.map((v, i) => [(i * W) / (n - 1), H - 1 - (v / max) * (H - 4)]);
    if (!pts.length) pts.push([0, H - 1], [W, H - 1]);
    const s = pts.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    card.line.setAttribute("points", s);
    card.area.setAttribute("d", "M0," + H + " L" + s.replace(/ /g, " L") + " L" + pts[pts.length - 1][0].toFixed(1) + "," + H + " Z");
    setText(card.peak, "peak " + int(Math.max(0, ...values)) + "/min");
  }

  const KIND = { ZONE_FILL: "Zone fill", ENTRY_RATE: "Entry rate", GATE_SILENT: "Gate silent" };

  function renderAlerts(view) {
    const list = $("alerts");
    setText($("alerts-count"), view.alerts.length ? String(view.alerts.length) : "");
    const now = secs(view.at);
    if (!view.alerts.length) {
      list.replaceChildren(el("li", "empty", "No open alerts", "alerts-empty"));
      return;
    }
    list.replaceChildren(...view.alerts.map((a) => {
      const li = el("li", "alert " + (a.kind || "").toLowerCase(), null, "alert-" + a.id);
      if (a.kind === "ZONE_FILL") li.classList.toggle("crit", num(a.level_pct) >= levelsOf(a.zone_id).crit);
      const head = el("div", "alert-head");
      head.append(el("span", "kind", KIND[a.kind] || a.kind),
                  el("span", "where", a.gate_id || a.zone_id),
                  el("span", "since", clock(a.raised_at) + " \u00b7 " + age(now - secs(a.raised_at)) + " ago"));
      li.append(head, el("div", "msg", a.message));
      return li;
    }));
  }

  const GATE_STATE = {
    GATE_UP: ["up", "UP"], GATE_OFFLINE: ["offline", "OFFLINE"], GATE_DOWN: ["down", "DOWN"],
    GATE_STATE_UNSPECIFIED: ["never", "NEVER HEARD"],
  };

  function gateRow(g) {
    let row = state.gateRows.get(g.gate_id);
    if (row) return row;
    const tr = el("tr", "", null, "gate-" + g.gate_id);
    const cells = ["name", "zone", "state", "beat", "bundle", "queued", "entry"].map((k) =>
      el("td", ["beat", "bundle", "queued"].includes(k) ? "num" : ""));
    tr.append(...cells);
    cells[0].textContent = g.gate_id;
    const chip = el("span", "chip", "", "gate-state-" + g.gate_id);
    cells[2].append(chip);
    const entryText = el("span", "entry-state", "", "gate-entry-" + g.gate_id);
    cells[6].append(entryText);
    row = { tr, cells, chip, entryText, button: null };
    if (state.me.controls.entry) {
      const b = el("button", "small ctl", "Close", "control-entry-gate-" + g.gate_id);
      b.type = "button";
      b.addEventListener("click", () => {
        const closed = !((state.controls && state.controls.closed_gates) || []).includes(g.gate_id);
        control("entry", { gate: g.gate_id, closed }, "Entry through gate " + g.gate_id + (closed ? " closed" : " reopened"));
      });
      cells[6].append(b);
      row.button = b;
    }
    state.gateRows.set(g.gate_id, row);
    $("gates").append(tr);
    return row;
  }

  function renderGates(view) {
    const now = secs(view.at);
    const own = (state.controls && state.controls.closed_gates) || [];
    const seen = new Set();
    for (const g of view.gates) {
      seen.add(g.gate_id);
      const r = gateRow(g);
      setText(r.cells[1], g.zone_id);
      const [cls, label] = GATE_STATE[g.state] || ["never", g.state];
      r.chip.className = "chip " + cls;
      setText(r.chip, label);
      setText(r.cells[3], g.last_heartbeat ? age(now - secs(g.last_heartbeat)) + " ago" : "\u2014");
      setText(r.cells[4], g.bundle_cut_at ? age(now - secs(g.bundle_cut_at)) : "none");
      setText(r.cells[5], int(g.queued_scans));
      r.cells[5].classList.toggle("warn", num(g.queued_scans) > 0);
      setText(r.entryText, g.entry_closed ? "closed" : "open");
      r.entryText.classList.toggle("off", !!g.entry_closed);
      r.tr.classList.toggle("closed", !!g.entry_closed);
      r.tr.title = [g.version && "software " + g.version,
                    g.last_scan && "last scan " + age(now - secs(g.last_scan)) + " ago"].filter(Boolean).join(", ");
      if (r.button) {
        const mine = own.includes(g.gate_id);
        setText(r.button, mine ? "Reopen" : "Close");
        r.button.setAttribute("aria-pressed", String(mine));
      }
    }
    for (const [id, r] of state.gateRows) {
      if (!seen.has(id)) { r.tr.remove(); state.gateRows.delete(id); }
    }
  }

  function renderSales(view) {
    const rows = view.sales.map((s) => {
      const tr = el("tr", "", null, "sales-" + s.channel);
      tr.append(el("td", "", s.channel), el("td", "num", int(s.tickets)), el("td", "num", int(s.persons)),
                el("td", "num", yuan(s.paid_fen)), el("td", "num", yuan(s.net_fen)));
      return tr;
    });
    if (!rows.length) {
      const tr = el("tr", "empty");
      const td = el("td", "", "No sales yet today");
      td.colSpan = 5;
      tr.append(td);
      rows.push(tr);
    }
    $("sales").replaceChildren(...rows);
    const sum = (k) => view.sales.reduce((a, s) => a + num(s[k]), 0);
    const tr = el("tr", "", null, "sales-total");
    tr.append(el("td", "", "Total"), el("td", "num", int(sum("tickets"))), el("td", "num", int(sum("persons"))),
              el("td", "num", yuan(sum("paid_fen"))), el("td", "num", yuan(sum("net_fen"))));
    $("sales-total").replaceChildren(tr);
  }

  // -- the big screen ------------------------------------------------------------------------
  function setScreen(on) {
    document.body.classList.toggle("screen", on);
    setText($("screen-toggle"), on ? "Control room" : "Big screen");
    const q = new URLSearchParams(location.search);
    if (on) q.set("screen", "1"); else q.delete("screen");
    history.replaceState(null, "", location.pathname + (q.toString() ? "?" + q : ""));
  }

  // -- start -----------------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("screen-toggle").addEventListener("click", () => setScreen(!document.body.classList.contains("screen")));
    $("venue").addEventListener("change", (e) => {
      state.venue = e.target.value;
      const q = new URLSearchParams(location.search);
      q.set("venue", state.venue);
      history.replaceState(null, "", location.pathname + "?" + q);
      clearVenue();
      openStream();
    });
    setScreen(new URLSearchParams(location.search).get("screen") === "1");
    boot();
  });
})();
