// scalper dashboard: one EventSource, one render. Vanilla JS and <canvas>, no CDN, works offline.
"use strict";
(function () {
  const STALE_S = 3;                 // no update from the server this long: the page says so
  const $ = (id) => document.getElementById(id);
  let last = null, lastAt = 0, pending = null;

  // -- formatting: money arrives as integer cents, prices as decimal strings ------------------
  function money(c) {
    if (c === null || c === undefined) return "-";
    const s = c < 0 ? "-" : "+", a = Math.abs(c);
    return s + "$" + Math.floor(a / 100) + "." + String(a % 100).padStart(2, "0");
  }
  function cls(c) { return c > 0 ? "pos" : c < 0 ? "neg" : ""; }
  const nyFmt = new Intl.DateTimeFormat("en-US", { timeZone: "America/New_York", hour12: false,
    hour: "2-digit", minute: "2-digit", second: "2-digit" });
  function ny(ns) { return ns ? nyFmt.format(new Date(ns / 1e6)) : "-"; }
  function esc(s) { return String(s ?? "").replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]); }
  function setMoney(el, c) { el.textContent = money(c); el.dataset.cents = String(c); el.className = cls(c); }
  function rows(table, html) { table.querySelector("tbody").innerHTML = html; }

  // -- live stream ------------------------------------------------------------------------------
  function connect() {
    const es = new EventSource("events");
    es.onopen = () => { $("conn").textContent = "live"; $("conn").className = "pill ok"; };
    es.onmessage = (ev) => { last = JSON.parse(ev.data); lastAt = Date.now(); render(last); };
    es.onerror = () => { $("conn").textContent = "disconnected"; $("conn").className = "pill bad"; };
  }

  function staleness() {
    const msgs = [];
    const age = lastAt ? (Date.now() - lastAt) / 1000 : Infinity;
    if (age > STALE_S) msgs.push(lastAt ? `STALE: no update from the dashboard server for ${age.toFixed(0)} s; what you see is old`
                                        : "STALE: no data from the dashboard server yet");
    if (last) {
      const silent = Object.entries(last.services).filter(([, s]) => s.stale)
        .map(([n, s]) => s.age_s === null ? `${n} (never heard)` : `${n} (${s.age_s.toFixed(1)} s)`);
      if (silent.length) msgs.push("SILENT: no heartbeat from " + silent.join(", "));
      if (last.feed.stale) msgs.push(last.feed.quote_age_s === null ? "MARKET DATA: no quote yet"
                                     : `MARKET DATA STALE: last quote ${last.feed.quote_age_s.toFixed(1)} s ago`);
    }
    const b = $("stale-banner");
    b.textContent = msgs.join("  ·  ");
    b.classList.toggle("on", msgs.length > 0);
    document.body.dataset.stale = msgs.length ? "1" : "0";
  }
  setInterval(staleness, 500);

  // -- render ------------------------------------------------------------------------------------
  function render(v) {
    $("contract").textContent = v.contract;
    $("clock").textContent = v.quote ? "market " + ny(v.quote.exch_ns) + " NY" : "";
    const p = v.position;
    $("pos-side").textContent = p.side;
    $("pos-side").className = p.direction > 0 ? "pos" : p.direction < 0 ? "neg" : "dim";
    $("pos-size").textContent = p.size ? String(p.size) : "";
    $("pos-avg").textContent = p.avg_price ?? "-";
    $("pos-stop").textContent = p.stop ?? "-";
    $("pos-target").textContent = p.target ?? "-";
    $("pos-mark").textContent = p.mark ?? "-";
    rows($("orders"), v.working_orders.length ? v.working_orders.map((o) =>
      `<tr><td class="l">${esc(o.leg)}</td><td class="l">${o.side}</td><td>${o.size}</td>` +
      `<td>${esc(o.stop ?? o.limit ?? "market")}</td><td class="dim">#${o.order_id}</td></tr>`).join("")
      : `<tr><td class="l dim">none</td></tr>`);

    const k = v.pnl;
    setMoney($("pnl-day"), k.day_cents); $("pnl-day").classList.add("big");
    setMoney($("pnl-realized"), k.realized_cents);
    setMoney($("pnl-unrealized"), k.unrealized_cents);
    $("pnl-fees").textContent = money(k.fees_cents).replace("+", "");
    $("balance").textContent = k.balance_cents === null ? "-" : money(k.balance_cents).replace("+", "");
    $("trades-today").textContent = k.trades_today;
    $("consec").textContent = k.consecutive_losses;
    const room = $("loss-room");
    room.textContent = money(k.loss_room_cents).replace("+", "") + " of " + money(k.loss_limit_cents).replace("+", "");
    room.dataset.cents = String(k.loss_room_cents);
    room.className = k.loss_room_cents < k.loss_limit_cents * 0.25 ? "neg" : k.loss_room_cents < k.loss_limit_cents * 0.5 ? "warn" : "";

    $("halts").innerHTML = v.halts.length ? v.halts.map((h) => `<span class="pill bad">${esc(h)}</span> `).join("")
      : `<span class="pill ok">no halt</span>`;
    const br = v.breakers.concat(v.risk_active.map((r) => r.kind).filter((x) => !v.breakers.includes(x)));
    $("breakers").innerHTML = br.length ? br.map((b) => `<span class="pill mid">${esc(b)}</span> `).join("")
      : `<span class="pill ok">no breaker active</span>`;
    const pr = v.prediction;
    $("prediction").innerHTML = pr ? `<span>latest</span><span class="${pr.direction > 0 ? "pos" : pr.direction < 0 ? "neg" : "dim"}">` +
      `${pr.direction > 0 ? "UP" : pr.direction < 0 ? "DOWN" : "FLAT"} ${(pr.confidence * 100).toFixed(1)} %</span>` +
      `<span>bar</span><span>${ny(pr.bar_start_ns)}</span><span>ATR</span><span>${pr.atr_ticks} ticks</span>` +
      `<span>model</span><span>${esc(pr.model_version)}${pr.in_range ? "" : " (features out of range)"}</span>`
      : `<span>latest</span><span class="dim">no prediction yet</span>`;

    rows($("services"), Object.entries(v.services).map(([n, s]) => {
      const c = s.stale ? "bad" : s.state === "ok" ? "ok" : "mid";
      return `<tr><td class="l">${n}</td><td class="l"><span class="pill ${c}">${esc(s.state)}</span></td>` +
        `<td>${s.age_s === null ? "never" : s.age_s.toFixed(1) + " s ago"}</td></tr>`;
    }).join(""));
    $("feed-state").textContent = v.feed.state + (v.feed.quote_age_s !== null ? ` (quote ${v.feed.quote_age_s.toFixed(1)} s ago)` : "");
    $("hub-market").textContent = v.hubs.market;
    $("hub-user").textContent = v.hubs.user;
    $("rest-free").textContent = Object.entries(v.rest_free).map(([s, n]) => `${s} ${n ?? "?"}`).join(", ");

    $("price-last").textContent = v.quote ? `bid ${v.quote.bid}  ask ${v.quote.ask}  last ${v.quote.last}` : "";
    drawPrice($("price-chart"), v);
    drawEquity($("equity-chart"), v.equity);

    rows($("trades"), v.trades.length ? v.trades.map((t) =>
      `<tr><td class="l">${ny(t.exit_ns)}</td><td class="l">${t.side}</td><td>${t.size}</td><td>${esc(t.entry_price)}</td>` +
      `<td>${esc(t.exit_price)}</td><td>${t.ticks}</td><td class="${cls(t.pnl_cents)}">${money(t.pnl_cents)}</td>` +
      `<td class="l">${esc(t.exit_reason)}</td></tr>`).join("") : `<tr><td class="l dim" colspan="8">no round trip yet</td></tr>`);
    rows($("signals"), v.signals.length ? v.signals.slice(0, 30).map((s) =>
      `<tr><td class="l">${ny(s.ts_ns)}</td><td class="l">${esc(s.kind)}</td><td>${(s.confidence * 100).toFixed(1)} %</td>` +
      `<td>${(s.price_ticks * parseFloat(v.tick_size)).toFixed(2)}</td><td class="l dim">${esc(s.reason)}</td></tr>`).join("")
      : `<tr><td class="l dim">no signal yet</td></tr>`);
    rows($("risk"), v.risk_events.length ? v.risk_events.slice(0, 30).map((r) =>
      `<tr><td class="l">${ny(r.ts_ns)}</td><td class="l"><span class="pill ${r.active ? "bad" : "ok"}">${r.active ? "ON" : "off"}</span></td>` +
      `<td class="l">${esc(r.kind)}</td><td class="l dim">${esc(r.detail)}</td></tr>`).join("")
      : `<tr><td class="l dim">none</td></tr>`);
    renderLatency(v.latency);
  }

  const HOPS = ["feed", "bar_wait", "features", "inference", "signal", "command", "order_prep", "broker_ack"];
  const HOP_COLORS = ["#8a96a3", "#444c56", "#58a6ff", "#a371f7", "#d29922", "#3fb950", "#db61a2", "#f85149"];
  function renderLatency(lat) {
    const chains = lat.recent || [];
    if (!chains.length) {
      const s = lat.summary || {};
      rows($("latency"), Object.keys(s).length ? Object.entries(s).map(([k, x]) => `<tr><td class="l">${esc(k)}</td><td>${x}</td></tr>`).join("")
        : `<tr><td class="l dim">no entry yet</td></tr>`);
      return;
    }
    const total = Math.max(...chains.map((c) => c.total || 1));
    const ms = (us) => us === undefined ? "-" : (us / 1000).toFixed(2);
    const head = `<tr><th class="l">entry (wall clock)</th>` + HOPS.map((h) => `<th>${h}</th>`).join("") +
      `<th>total</th><th class="l">waterfall</th></tr>`;
    rows($("latency"), head + chains.map((c) => {
      const bars = HOPS.map((h, i) => {
        const w = c[h] ? Math.max(1, 320 * c[h] / total) : 0;
        return w ? `<span class="bar" title="${h} ${ms(c[h])} ms" style="width:${w}px;background:${HOP_COLORS[i]}"></span>` : "";
      }).join("");
      return `<tr><td class="l">${ny(c.at_ns)}</td>` + HOPS.map((h) => `<td>${ms(c[h])}</td>`).join("") +
        `<td><b>${ms(c.total)}</b></td><td class="l">${bars}</td></tr>`;
    }).join(""));
  }

  // -- canvas charts ----------------------------------------------------------------------------
  function setup(canvas) {
    const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    return [ctx, w, h];
  }
  function axes(ctx, w, h, L, lo, hi, fmt) {
    ctx.strokeStyle = "#2b3642"; ctx.fillStyle = "#8a96a3"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = 10 + (h - 30) * i / 4, val = hi - (hi - lo) * i / 4;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(w - 8, y); ctx.stroke();
      ctx.fillText(fmt(val), 4, y + 4);
    }
  }
  function drawPrice(canvas, v) {
    const [ctx, w, h] = setup(canvas);
    const t0ns = v.chart.t0_ns, tick = parseFloat(v.tick_size);
    const bars = v.chart.bars.map((b) => [t0ns + b[0] * 1e9, b[1], b[2], b[3]]);   // [ns, close, high, low]
    if (!bars.length) { ctx.fillStyle = "#8a96a3"; ctx.fillText("waiting for bars", 20, 30); return; }
    const t0 = bars[0][0], t1 = bars[bars.length - 1][0] + 1e9;
    const levels = [v.chart.stop_ticks, v.chart.target_ticks].filter((x) => x !== null);
    let lo = Math.min(...bars.map((b) => b[3]), ...levels), hi = Math.max(...bars.map((b) => b[2]), ...levels);
    if (hi - lo < 4) { hi += 2; lo -= 2; }
    const L = 62, X = (ns) => L + (w - L - 8) * (ns - t0) / (t1 - t0), Y = (tk) => 10 + (h - 30) * (hi - tk) / (hi - lo);
    axes(ctx, w, h, L, lo, hi, (x) => (x * tick).toFixed(2));
    ctx.fillStyle = "#8a96a3"; ctx.fillText(ny(t0), L, h - 6); ctx.fillText(ny(t1), w - 60, h - 6);
    ctx.fillStyle = "rgba(88,166,255,0.15)";
    for (const b of bars) ctx.fillRect(X(b[0]), Y(b[2]), Math.max(1, X(b[0] + 1e9) - X(b[0])), Math.max(1, Y(b[3]) - Y(b[2])));
    ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 1.5; ctx.beginPath();
    bars.forEach((b, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, X(b[0] + 5e8), Y(b[1])));
    ctx.stroke();
    const level = (tk, color, label) => {
      if (tk === null || tk === undefined) return;
      ctx.strokeStyle = color; ctx.setLineDash([5, 4]); ctx.beginPath(); ctx.moveTo(L, Y(tk)); ctx.lineTo(w - 8, Y(tk)); ctx.stroke();
      ctx.setLineDash([]); ctx.fillStyle = color; ctx.fillText(label + " " + (tk * tick).toFixed(2), w - 110, Y(tk) - 3);
    };
    level(v.chart.stop_ticks, "#f85149", "stop");
    level(v.chart.target_ticks, "#3fb950", "target");
    if (v.chart.entry_price) level(parseFloat(v.chart.entry_price) / tick, "#d8dee6", "entry");
    for (const m of v.chart.markers) {
      if (m.ts_ns < t0 || m.ts_ns > t1) continue;
      const x = X(m.ts_ns), y = Y(m.price_ticks), buy = m.side === 0;
      ctx.fillStyle = buy ? "#3fb950" : "#f85149";
      ctx.beginPath();
      if (m.leg === "entry") {           // entries: a triangle pointing the way of the trade
        ctx.moveTo(x, y + (buy ? -1 : 1) * 2); ctx.lineTo(x - 6, y + (buy ? 10 : -10)); ctx.lineTo(x + 6, y + (buy ? 10 : -10));
        ctx.fill();
      } else {                            // exits: a ring, labelled with the leg (stop, target, exit, flatten)
        ctx.strokeStyle = ctx.fillStyle; ctx.lineWidth = 2; ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.stroke();
        if (m.leg !== "exit") ctx.fillText(m.leg, x + 7, y + 4);   // stop, target, flatten: say which
      }
    }
    const pr = v.prediction;
    if (pr) {
      ctx.fillStyle = pr.direction > 0 ? "#3fb950" : pr.direction < 0 ? "#f85149" : "#8a96a3";
      ctx.font = "bold 13px system-ui, sans-serif";
      ctx.fillText(`model: ${pr.direction > 0 ? "UP" : pr.direction < 0 ? "DOWN" : "FLAT"} ${(pr.confidence * 100).toFixed(1)} %`, L + 8, 24);
    }
  }
  function drawEquity(canvas, pts) {
    const [ctx, w, h] = setup(canvas);
    if (pts.length < 2) { ctx.fillStyle = "#8a96a3"; ctx.fillText("no round trip yet", 20, 30); return; }
    const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
    let lo = Math.min(0, ...pts.map((p) => p[1])), hi = Math.max(0, ...pts.map((p) => p[1]));
    if (hi - lo < 100) { hi += 50; lo -= 50; }
    const L = 62, X = (ns) => L + (w - L - 8) * (ns - t0) / (t1 - t0), Y = (c) => 10 + (h - 30) * (hi - c) / (hi - lo);
    axes(ctx, w, h, L, lo, hi, (c) => money(Math.round(c)));
    ctx.strokeStyle = "#8a96a3"; ctx.setLineDash([3, 3]); ctx.beginPath(); ctx.moveTo(L, Y(0)); ctx.lineTo(w - 8, Y(0)); ctx.stroke(); ctx.setLineDash([]);
    ctx.strokeStyle = pts[pts.length - 1][1] >= 0 ? "#3fb950" : "#f85149"; ctx.lineWidth = 2; ctx.beginPath();
    pts.forEach((p, i) => { if (i) ctx.lineTo(X(p[0]), Y(pts[i - 1][1])); (i ? ctx.lineTo : ctx.moveTo).call(ctx, X(p[0]), Y(p[1])); });
    ctx.stroke();
    ctx.fillStyle = "#8a96a3"; ctx.fillText(ny(t0), L, h - 6); ctx.fillText(ny(t1), w - 60, h - 6);
  }

  // -- operator buttons: halt / resume / flatten behind a confirmation -----------------------------
  const WHAT = { halt: "Halt new entries (engine and gateway)?", resume: "Lift the manual halt?",
                 flatten: "Cancel every order and close every position NOW?" };
  document.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", () => {
    pending = b.dataset.action;
    $("confirm-text").textContent = WHAT[pending];
    $("confirm").classList.add("on");
    $("confirm-reason").focus();
  }));
  $("confirm-no").addEventListener("click", () => { pending = null; $("confirm").classList.remove("on"); });
  $("confirm-yes").addEventListener("click", async () => {
    const action = pending; pending = null;
    $("confirm").classList.remove("on");
    if (!action) return;
    $("command-result").textContent = action + ": sending...";
    try {
      const r = await fetch("api/command", { method: "POST", headers: { "Content-Type": "application/json", "X-Scalper-Action": action },
        body: JSON.stringify({ action, reason: $("confirm-reason").value || ("dashboard " + action) }) });
      const j = await r.json();
      $("command-result").textContent = j.answers ? j.answers.map((a) => `${a.target}: ${a.ok ? "ok" : a.answered ? "refused" : "no answer"}${a.message ? " - " + a.message : ""}`).join("; ")
        : (j.error || r.status);
      $("command-result").dataset.ok = j.ok ? "1" : "0";
    } catch (e) { $("command-result").textContent = action + ": " + e; $("command-result").dataset.ok = "0"; }
    $("confirm-reason").value = "";
  });

  connect();
})();
