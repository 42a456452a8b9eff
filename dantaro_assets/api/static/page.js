// Dantaro's live page: the API's snapshots as a trader reads them, kept current by /events.
// Every price shown is the API's (already on Upbit's tick grid): the page formats, it never rounds.
"use strict";

const LWC = window.LightweightCharts;
const KST_S = 9 * 3600; // the chart's axis reads its times as UTC: shifting them shows Korean time
const EVENTS = "/events?topics=market_status,recommendations";
const CANDLES = 200;
const RECONNECT_MS = 3000; // after the server refused the stream (EventSource retries dropped connections itself)
const CANDLE_REFRESH_MS = 60000; // candles are not events: the chart reads them again every minute
const SCORECARD_REFRESH_MS = 60000;

const REGIMES = { risk_on: "위험 선호", neutral: "중립", risk_off: "위험 회피" };
const CAUTIONS = {
  price_fluctuations: "가격 급등락", trading_volume_soaring: "거래량 급등", deposit_amount_soaring: "입금량 급등",
  global_price_differences: "글로벌 가격 차이", concentration_of_small_accounts: "소수 계정 집중",
};
const HORIZONS = { "1h": "1시간", "4h": "4시간", "24h": "24시간" };

const numbers = new Intl.NumberFormat("ko-KR", { maximumFractionDigits: 8 });
const kstTime = new Intl.DateTimeFormat("ko-KR", {
  timeZone: "Asia/Seoul", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
const present = (v) => v !== null && v !== undefined && !(typeof v === "number" && !Number.isFinite(v));
const krw = (v) => (present(v) ? numbers.format(v) : "–");
const fixed = (v, digits) => (present(v) ? v.toFixed(digits) : "–");
const signed = (v, digits = 2) => (present(v) ? `${v > 0 ? "+" : ""}${v.toFixed(digits)}%` : "–");
const share = (v) => (present(v) ? `${Math.round(v * 100)}%` : "–"); // a 0-1 share as a whole percent
const kst = (iso) => (iso ? `${kstTime.format(new Date(iso))} KST` : "");
const el = (id) => document.getElementById(id);

function node(tag, attrs = {}, ...children) {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") made.className = value;
    else if (value !== undefined && value !== null) made.setAttribute(name, value);
  }
  made.append(...children.filter((c) => c !== null && c !== undefined));
  return made;
}

function setField(scope, field, text, title) {
  for (const target of scope.querySelectorAll(`[data-field="${field}"]`)) {
    target.textContent = text;
    if (title !== undefined) target.title = title;
  }
}

// --- the API -----------------------------------------------------------------------------------
class Unauthorized extends Error {}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (response.status === 401) throw new Unauthorized(path);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function askForToken() {
  el("token-form").hidden = false;
  setLive("down", "토큰 필요");
}

el("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `dantaro_token=${encodeURIComponent(el("token").value)}; path=/; SameSite=Strict${secure}`;
  el("token-form").hidden = true;
  start();
});

// --- market status -------------------------------------------------------------------------------
function renderStatus(snapshot) {
  const row = snapshot && snapshot.rows && snapshot.rows[0];
  const scope = el("status");
  if (!row) return;
  const regime = el("regime");
  regime.dataset.regime = row.regime || "";
  setField(scope, "regime", REGIMES[row.regime] || row.regime || "–", row.regime);
  setField(scope, "score", present(row.score) ? `${fixed(row.score, 0)} / 100` : "–");
  el("score-meter").style.width = `${present(row.score) ? row.score : 0}%`;
  setField(scope, "breadth_1h", `${share(row.breadth_1h)}${present(row.markets) ? ` · ${row.markets}종목` : ""}`);
  setField(scope, "breadth_day", share(row.breadth_day));
  setField(scope, "median_return_1h_pct", signed(row.median_return_1h_pct));
  setField(scope, "btc_price", krw(row.btc_price));
  setField(scope, "btc_return_1h_pct", present(row.btc_return_1h_pct) ? `1시간 ${signed(row.btc_return_1h_pct)}` : "");
  setField(scope, "summary", row.summary || "");
  setField(scope, "as_of", kst(snapshot.as_of));
}

// --- picks ---------------------------------------------------------------------------------------
const state = { picks: [], selected: null, interval: "1h", chartKey: null, chartSeq: 0 };

function expiry(row) {
  const hours = present(row.horizon_hours) ? `${row.horizon_hours}시간` : null;
  if (!row.expires_at) return hours || "–";
  // the date too: a 24 h plan made at 05:00 expires at 05:00 the next day
  return node("span", { title: `${kst(row.expires_at)}까지` }, kstTime.format(new Date(row.expires_at)), hours && node("span", { class: "sub" }, hours));
}

function cautions(flags) {
  // a JSON list; a table whose first write had no picks stores it as JSON text, so text is read too
  let list = flags;
  if (typeof flags === "string") { try { list = JSON.parse(flags); } catch { list = [flags]; } }
  if (!Array.isArray(list) || !list.length) return "–";
  return node("span", {}, ...list.map((flag) => node("span", { class: "flag", title: flag }, CAUTIONS[flag] || flag)));
}

// Columns a pick may have; "optional" ones are shown only when some pick carries them (older snapshots lack them).
const PICK_COLUMNS = [
  { key: "rank", label: "순위", cell: (r) => String(r.rank ?? "–") },
  { key: "market", label: "마켓", cell: (r) => node("span", {}, node("span", { class: "code" }, r.market.replace(/^KRW-/, "")), node("span", { class: "sub" }, r.market)) },
  { key: "score", label: "점수", cell: (r) => fixed(r.score, 1) },
  { key: "entry", label: "진입가", cell: (r) => krw(r.entry) },
  { key: "target", label: "목표가", cell: (r) => krw(r.target) },
  { key: "stop", label: "손절가", cell: (r) => krw(r.stop) },
  { key: "reward_risk", label: "손익비", cell: (r) => (present(r.reward_risk) ? `${r.reward_risk.toFixed(2)} : 1` : "–") },
  { key: "p_target_first", label: "확률", title: "손절가보다 목표가에 먼저 닿을 확률", optional: true, cell: (r) => share(r.p_target_first) },
  { key: "expected_return_net", label: "기대수익", title: "수수료를 뺀 기대 수익률", optional: true,
    cell: (r) => (present(r.expected_return_net) ? signed(r.expected_return_net * 100) : "–") },
  { key: "expires_at", label: "기한", title: "이 계획이 유효한 시각 (보유 기간)", optional: true, when: (r) => present(r.expires_at) || present(r.horizon_hours), cell: expiry },
  { key: "caution", label: "주의", cell: (r) => cautions(r.caution) },
];

function renderPicks(snapshot) {
  const rows = (snapshot && snapshot.rows) || [];
  const before = new Map(state.picks.map((r) => [r.market, r]));
  state.picks = rows;
  const columns = PICK_COLUMNS.filter((c) => !c.optional || rows.some(c.when || ((r) => present(r[c.key]))));
  const table = el("picks-table");
  table.tHead.replaceChildren(node("tr", {}, ...columns.map((c) => node("th", { scope: "col", title: c.title }, c.label))));
  table.tBodies[0].replaceChildren(...rows.map((row) => {
    const old = before.get(row.market);
    const changed = before.size && (!old || old.entry !== row.entry || old.target !== row.target || old.stop !== row.stop);
    const tr = node("tr", { "data-market": row.market, class: changed ? "changed" : null, "aria-selected": String(row.market === state.selected),
      title: row.summary },
      ...columns.map((c) => node("td", { "data-field": c.key }, c.cell(row))));
    tr.addEventListener("click", () => select(row.market));
    return tr;
  }));
  el("picks-empty").hidden = rows.length > 0;
  setField(el("picks"), "as_of", kst(snapshot && snapshot.as_of));
  if (!rows.some((r) => r.market === state.selected)) select(rows.length ? rows[0].market : null);
  else loadChart();
}

function select(market) {
  state.selected = market;
  for (const tr of el("picks-table").tBodies[0].rows) tr.setAttribute("aria-selected", String(tr.dataset.market === market));
  loadChart();
}

// --- chart ---------------------------------------------------------------------------------------
// Support and resistance zones as translucent bands behind the candles (a series primitive of Lightweight Charts).
class ZoneBands {
  constructor() {
    this.zones = [];
    this.keep = []; // prices the price scale must show (the plan, the nearest zones)
    this.series = null;
    this.view = { zOrder: () => "bottom", renderer: () => ({ draw: (target) => this.draw(target) }) };
  }
  attached({ series, requestUpdate }) { this.series = series; this.requestUpdate = requestUpdate; }
  detached() { this.series = null; }
  paneViews() { return [this.view]; }
  updateAllViews() {}
  set(zones, keep) { this.zones = zones; this.keep = keep; if (this.requestUpdate) this.requestUpdate(); }
  autoscaleInfo() {
    if (!this.keep.length) return null;
    return { priceRange: { minValue: Math.min(...this.keep), maxValue: Math.max(...this.keep) } };
  }
  draw(target) {
    if (!this.series) return;
    target.useBitmapCoordinateSpace(({ context, bitmapSize, verticalPixelRatio }) => {
      for (const zone of this.zones) {
        const top = this.series.priceToCoordinate(zone.high);
        const bottom = this.series.priceToCoordinate(zone.low);
        if (top === null || bottom === null) continue;
        context.fillStyle = zone.color;
        const y = Math.round(Math.min(top, bottom) * verticalPixelRatio);
        context.fillRect(0, y, bitmapSize.width, Math.max(1, Math.round(Math.abs(bottom - top) * verticalPixelRatio)));
      }
    });
  }
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
let chart, candleSeries, volumeSeries, bands;
let priceLines = [];

function chartColours() {
  return {
    layout: { background: { type: "solid", color: css("--panel") }, textColor: css("--muted"), attributionLogo: true },
    grid: { vertLines: { color: css("--line") }, horzLines: { color: css("--line") } },
  };
}

function makeChart() {
  chart = LWC.createChart(el("chart"), {
    ...chartColours(), autoSize: true,
    rightPriceScale: { borderVisible: false }, timeScale: { borderVisible: false, timeVisible: true, secondsVisible: false },
    localization: { locale: "ko-KR", priceFormatter: krw },
  });
  const up = css("--up"), down = css("--down");
  candleSeries = chart.addSeries(LWC.CandlestickSeries, { upColor: up, downColor: down, wickUpColor: up, wickDownColor: down, borderVisible: false });
  volumeSeries = chart.addSeries(LWC.HistogramSeries, { priceFormat: { type: "volume" }, priceScaleId: "", lastValueVisible: false, priceLineVisible: false });
  volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.85, bottom: 0 } });
  bands = new ZoneBands();
  candleSeries.attachPrimitive(bands);
}

function legendItem(field, colour, label, value) {
  return node("span", { "data-field": field }, node("i", { class: "swatch", style: `background:${colour}` }), `${label} `, node("b", {}, value));
}

function drawPlan(pick, levels) {
  for (const line of priceLines) candleSeries.removePriceLine(line);
  priceLines = [];
  const keep = [];
  const zones = [];
  const plan = [];
  const line = (price, colour, title, style) => {
    priceLines.push(candleSeries.createPriceLine({ price, color: colour, lineWidth: 1, lineStyle: style, axisLabelVisible: true, title }));
  };
  if (pick) {
    const legs = [["entry", "진입", css("--accent")], ["target", "목표", css("--up")], ["stop", "손절", css("--down")]];
    for (const [field, title, colour] of legs) {
      if (!present(pick[field])) continue;
      line(pick[field], colour, title, LWC.LineStyle.Solid);
      keep.push(pick[field]);
      const change = field !== "entry" && present(pick.entry) ? ` (${signed((pick[field] / pick.entry - 1) * 100)})` : "";
      plan.push(legendItem(field, colour, title, `${krw(pick[field])}${change}`));
    }
  }
  const zoneItems = [];
  for (const level of (levels && levels.rows) || []) {
    const support = level.side === "support", inside = level.side === "at_price";  // at_price: the zone the price trades in
    const rgb = css(inside ? "--inside" : support ? "--support" : "--resistance");
    const name = inside ? "현재가 구간" : `${support ? "지지" : "저항"} ${level.rank}`;
    zones.push({ low: level.zone_low, high: level.zone_high, color: `rgba(${rgb}, ${level.rank === 1 ? 0.22 : 0.12})` });
    line(level.level, `rgba(${rgb}, 0.9)`, name, LWC.LineStyle.Dotted);
    if (level.rank === 1) keep.push(level.zone_low, level.zone_high);
    zoneItems.push(legendItem(`${level.side}-${level.rank}`, `rgba(${rgb}, 0.6)`, name, `${krw(level.zone_low)} – ${krw(level.zone_high)}`));
  }
  bands.set(zones, keep.filter(present));
  el("plan").replaceChildren(...plan);
  el("zones").replaceChildren(...zoneItems);
}

async function loadChart() {
  const market = state.selected;
  const seq = ++state.chartSeq;
  el("chart-title").textContent = market ? `${market} 차트` : "차트";
  if (!market) return;
  if (!chart) makeChart();
  try {
    const [candles, levels] = await Promise.all([
      getJSON(`/candles/${market}?interval=${state.interval}&limit=${CANDLES}`), getJSON(`/support-levels/${market}`),
    ]);
    if (seq !== state.chartSeq) return; // another market or interval was chosen meanwhile
    const rows = (candles && candles.candles) || [];
    const time = (c) => Date.parse(c.start) / 1000 + KST_S;
    candleSeries.setData(rows.map((c) => ({ time: time(c), open: c.open, high: c.high, low: c.low, close: c.close })));
    volumeSeries.setData(rows.map((c) => ({ time: time(c), value: c.value, color: c.close >= c.open ? "rgba(240,68,82,.25)" : "rgba(59,130,246,.25)" })));
    el("chart-empty").hidden = rows.length > 0;
    el("chart-empty").textContent = `저장된 ${state.interval} 캔들이 없습니다.`;
    drawPlan(state.picks.find((p) => p.market === market), levels);
    const key = `${market} ${state.interval}`;
    if (key !== state.chartKey) { chart.timeScale().fitContent(); state.chartKey = key; }
  } catch (error) {
    if (error instanceof Unauthorized) askForToken();
    else console.warn(error);
  }
}

for (const button of el("intervals").querySelectorAll("button")) {
  button.setAttribute("aria-pressed", String(button.dataset.interval === state.interval));
  button.addEventListener("click", () => {
    state.interval = button.dataset.interval;
    for (const b of el("intervals").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
    loadChart();
  });
}

// --- scorecard -----------------------------------------------------------------------------------
let scorecardRead = 0;

function renderScorecard(card) {
  if (!card) return;
  scorecardRead = Date.now();
  const head = ["기간", "스코어러", "보유", "추천 수", "시장 대비 승률", "평균 초과 수익", "목표 먼저", "순위 IC"];
  const table = el("scorecard-table");
  table.tHead.replaceChildren(node("tr", {}, ...head.map((h) => node("th", { scope: "col" }, h))));
  const rows = [...card.rows].sort((a, b) => (b.scorer === card.served) - (a.scorer === card.served));
  if (!rows.length) {
    table.tBodies[0].replaceChildren(node("tr", {}, node("td", { colspan: head.length, class: "muted" }, "아직 채점된 추천이 없습니다 (보유 기간이 지나야 채점됩니다).")));
    setField(el("scorecard"), "until", "");
    return;
  }
  table.tBodies[0].replaceChildren(...rows.map((r) => node("tr", { class: r.scorer === card.served ? "served" : null, "data-scorer": r.scorer },
    node("td", {}, r.window), node("td", { title: card.scorers[r.scorer] || "" }, `${r.scorer}${r.scorer === card.served ? " ★" : ""}`),
    node("td", {}, HORIZONS[r.horizon] || r.horizon), node("td", {}, String(r.picks)),
    node("td", {}, share(r.hit_rate)), node("td", { class: (r.mean_excess || 0) >= 0 ? "up" : "down" }, signed(present(r.mean_excess) ? r.mean_excess * 100 : null)),
    node("td", {}, share(r.target_before_stop)), node("td", {}, fixed(r.rank_ic, 2)))));
  setField(el("scorecard"), "until", card.until ? `${kst(card.until)}까지` : "채점된 추천 없음");
}

async function loadScorecard() {
  try { renderScorecard(await getJSON("/recommendations/scorecard")); } catch (error) { if (!(error instanceof Unauthorized)) console.warn(error); }
}

// --- live ----------------------------------------------------------------------------------------
function setLive(stateName, text) {
  const live = el("live");
  live.dataset.state = stateName;
  live.textContent = text;
}

let events = null;

function listen() {
  if (events) events.close();
  events = new EventSource(EVENTS); // sends the page's cookie (the token, when the API needs one)
  events.onopen = () => setLive("live", "실시간");
  events.addEventListener("market_status", (e) => renderStatus(JSON.parse(e.data)));
  events.addEventListener("recommendations", (e) => {
    renderPicks(JSON.parse(e.data));
    if (Date.now() - scorecardRead > SCORECARD_REFRESH_MS) loadScorecard();
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) { // refused (e.g. 401, 503): EventSource gives up, so try again
      setLive("down", "연결 끊김 · 재시도 중");
      setTimeout(start, RECONNECT_MS);
    } else {
      setLive("connecting", "재연결 중");
    }
  };
}

async function start() {
  try {
    const [status, picks] = await Promise.all([getJSON("/market-status/latest"), getJSON("/recommendations/latest")]);
    renderStatus(status);
    renderPicks(picks);
    loadScorecard();
    listen();
  } catch (error) {
    if (error instanceof Unauthorized) { askForToken(); return; }
    setLive("down", "연결 끊김 · 재시도 중");
    setTimeout(start, RECONNECT_MS);
  }
}

function tick() { el("clock").textContent = kst(new Date().toISOString()); }

el("theme").addEventListener("click", () => {
  const dark = matchMedia("(prefers-color-scheme: dark)").matches;
  const current = document.documentElement.dataset.theme || (dark ? "dark" : "light");
  document.documentElement.dataset.theme = current === "dark" ? "light" : "dark";
  localStorage.setItem("dantaro-theme", document.documentElement.dataset.theme);
  if (chart) chart.applyOptions(chartColours());
});
if (localStorage.getItem("dantaro-theme")) document.documentElement.dataset.theme = localStorage.getItem("dantaro-theme");

tick();
setInterval(tick, 10000);
setInterval(loadChart, CANDLE_REFRESH_MS);
start();
