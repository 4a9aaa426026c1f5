// The live line view: draws the trays, rates, devices and alarms from /events (server-sent
// events), and the selected tray's evidence from /lines/{line}/trays/... (an HTML fragment).
// Says "stale" when the broker or the stream is down, or no result came for a while.
// Words come from the page in the user's language; times are shown in the plant's time zone
// (page.tz, an IANA name; without one, the zone's offset when the page was made).
"use strict";
(function () {
  const page = JSON.parse(document.getElementById("page").textContent);
  const W = page.words;
  const line = page.line;
  const traysBody = document.querySelector("#trays tbody");
  const devicesBody = document.querySelector("#devices tbody");
  const alarmsList = document.getElementById("alarms");
  const pill = document.getElementById("live");
  const why = document.getElementById("live-why");
  const KEPT = 50;
  let lastTick = 0, broker = false, db = true, lastResult = null, selected = null;
  const alarms = new Map();

  function fmt(text, values) {
    return text.replace(/\{(\w+)\}/g, (m, k) => (k in values ? values[k] : m));
  }
  const fr = page.lang === "fr";
  const clock = page.tz
    ? new Intl.DateTimeFormat("en-GB", { timeZone: page.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" })
    : null;
  function time(iso) {
    const d = new Date(iso);
    if (clock) return clock.format(d);
    return new Date(d.getTime() + page.tz_offset_min * 60000).toISOString().slice(11, 19);
  }
  function pct(x) {
    if (x === null || x === undefined) return "—";
    const text = (100 * x).toFixed(1);
    return fr ? text.replace(".", ",") + "\u00a0%" : text + " %";
  }
  function detail(a) {
    const f = a.facts || {};
    if (!Object.keys(f).length) return a.detail;  // restored from the database: as stored
    const values = { ...f };
    if ("rate" in f) { values.rate = pct(f.rate); values.limit = pct(f.limit); }
    return fmt(W.t["alarm.detail." + a.kind] || a.detail, values);
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function addTray(t, atTop) {
    const key = t.device + "/" + t.sample_id;
    if (traysBody.querySelector(`tr[data-key="${CSS.escape(key)}"]`)) return;
    const tr = document.createElement("tr");
    tr.dataset.key = key;
    tr.dataset.device = t.device;
    tr.dataset.sample = t.sample_id;
    tr.dataset.ts = t.ts;
    cell(tr, time(t.ts));
    cell(tr, t.device);
    cell(tr, t.sample_id, "sample");
    cell(tr, t.grade, "grade g-" + t.grade);
    cell(tr, t.decision ? t.decision + " (" + (W.decisions[t.decision] || t.decision) + ")" : "—",
         "decision d-" + t.decision);
    cell(tr, t.defects.map((d) => W.defects[d] || d.replace(/_/g, " ")).join(", ") || "—");
    tr.addEventListener("click", () => select(tr));
    if (atTop) traysBody.insertBefore(tr, traysBody.firstChild); else traysBody.appendChild(tr);
    while (traysBody.children.length > KEPT) traysBody.removeChild(traysBody.lastChild);
  }

  async function select(tr) {
    for (const r of traysBody.querySelectorAll("tr.sel")) r.classList.remove("sel");
    tr.classList.add("sel");
    selected = tr.dataset.key;
    const url = `/lines/${encodeURIComponent(line)}/trays/${encodeURIComponent(tr.dataset.device)}/` +
      `${encodeURIComponent(tr.dataset.sample)}?ts=${encodeURIComponent(tr.dataset.ts)}`;
    const box = document.getElementById("selected");
    try {
      const resp = await fetch(url, { credentials: "same-origin" });
      if (selected === tr.dataset.key) box.innerHTML = await resp.text();
    } catch (e) {
      box.textContent = W.t["live.station_down"];
    }
  }

  function summary(s) {
    const r = s.rates;
    const rr = document.getElementById("reject-rate");
    rr.textContent = pct(r.reject);
    rr.classList.toggle("over", s.reject_rate_max !== null && r.reject !== null && r.reject > s.reject_rate_max);
    document.getElementById("reject-limit").textContent =
      s.reject_rate_max === null ? "" : "(" + fmt(W.t["line.limit"], { limit: pct(s.reject_rate_max) }) + ")";
    document.getElementById("hold-rate").textContent = pct(r.hold);
    document.getElementById("rate-window").textContent = fmt(W.t["line.window"], { minutes: s.window_min, n: r.n });
    devicesBody.textContent = "";
    for (const d of s.devices) {
      const tr = document.createElement("tr");
      tr.dataset.device = d.device;
      cell(tr, d.device);
      const state = d.state || "unknown";
      cell(tr, W.t["device." + state] || state, "state-" + state);
      cell(tr, time(d.last_seen));
      devicesBody.appendChild(tr);
    }
    alarms.clear();
    for (const a of s.alarms) alarms.set(alarmKey(a), a);
    drawAlarms();
  }

  function alarmKey(a) { return a.kind + "|" + a.subject + "|" + a.raised_at; }

  function drawAlarms() {
    alarmsList.textContent = "";
    const open = [...alarms.values()].filter((a) => a.active || !a.acked_by);
    if (!open.length) {
      const li = document.createElement("li");
      li.className = "none acked";
      li.textContent = W.t["line.no_alarms"];
      alarmsList.appendChild(li);
    }
    for (const a of open) {
      const li = document.createElement("li");
      li.className = "alarm alarm-" + a.kind + (a.acked_by ? " acked" : "");
      const title = fmt(W.t["alarm." + a.kind] || a.kind, { subject: a.subject });
      li.append(`${time(a.raised_at)} ${title}${fr ? "\u00a0:" : ":"} ${detail(a)}`);
      if (a.acked_by) {
        li.append(" — " + fmt(W.t["alarm.acked"], { user: a.acked_by }));
      } else if (page.may_ack && a.id !== null) {
        const f = document.createElement("form");
        f.method = "post";
        f.action = `/alarms/${a.id}/ack`;
        f.innerHTML = '<input type="hidden" name="csrf_token"><input type="hidden" name="next"><button type="submit"></button>';
        f.querySelector("[name=csrf_token]").value = window.SQAL_CSRF;
        f.querySelector("[name=next]").value = location.pathname;
        f.querySelector("button").textContent = W.t["alarm.ack"];
        li.append(" ", f);
      }
      alarmsList.appendChild(li);
    }
  }

  function liveness() {
    const now = Date.now();
    let reason = null;
    if (now - lastTick > 3000) reason = W.t["live.station_down"];
    else if (!broker) reason = W.t["live.broker_down"];
    else if (lastResult === null || now - lastResult > page.stale_after_s * 1000)
      reason = fmt(W.t["live.no_data"], { seconds: lastResult === null ? "∞" : Math.round((now - lastResult) / 1000) });
    pill.textContent = reason ? W.t["live.stale"] : W.t["live.live"];
    pill.className = "pill " + (reason ? "stale" : "live");
    why.textContent = [reason, db ? null : W.t["live.db_down"]].filter(Boolean).join("; ");
  }

  const source = new EventSource(`/events?line=${encodeURIComponent(line)}`);
  source.addEventListener("snapshot", (e) => {
    const s = JSON.parse(e.data);
    traysBody.textContent = "";
    for (const t of s.trays) addTray(t, false);
    summary(s);
    document.body.dataset.stream = "open";
  });
  source.addEventListener("tray", (e) => { addTray(JSON.parse(e.data), true); lastResult = Date.now(); });
  source.addEventListener("error", () => { document.body.dataset.stream = "closed"; });
  source.addEventListener("summary", (e) => summary(JSON.parse(e.data)));
  source.addEventListener("alarm", (e) => { const a = JSON.parse(e.data); alarms.set(alarmKey(a), a); drawAlarms(); });
  source.addEventListener("tick", (e) => {
    const h = JSON.parse(e.data);
    lastTick = Date.now(); broker = h.broker; db = h.db;
    if (line in h.ages) lastResult = lastTick - 1000 * h.ages[line];
    liveness();
  });
  setInterval(liveness, 500);
  liveness();
})();
