/**
 * The operators' cockpit, for a city's devices, live from the results stream of whichever
 * instance serves it (every instance announces every result):
 * - per class, how many results of the last hour (⚠ out of range: CKKS scores beyond the
 *   calibrated range, no label; ✗ not decrypted), and a timeline chart of them per minute
 *   (GET /api/v1/stats, refreshed every 10 s, and each announced result at once);
 * - per device, the latest label and the last 10, how many results, how many flagged, the
 *   noise budget the latest BGV result had left, its rate (results in the last minute) and
 *   when it was last seen (received) and its last frame captured;
 * - the results, filterable by device, model version and receipt time, each with the
 *   device's capture time beside the receipt time, ordered by either (results arrive out
 *   of order when devices retry; capture time puts them back).
 * On a `resync` event (the instance may have missed announcements) everything is read
 * again. The operator token is kept in this tab's sessionStorage only.
 */
export const COCKPIT_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1" />
<title>sealed-edge cockpit</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; }
  h1 { font-size: 1.4rem; margin: 0 0 0.3rem; }
  h2 { font-size: 1.1rem; margin: 1.4rem 0 0.3rem; }
  table { border-collapse: collapse; margin-top: 0.6rem; min-width: 32rem; }
  th, td { border-bottom: 1px solid #d8dce6; padding: 0.35rem 0.6rem; text-align: left; }
  th { background: #f3f5f9; }
  .label { font-size: 1.3rem; font-weight: 700; }
  .flagged { color: #b42318; }
  #status { color: #57606a; }
  form { margin: 0.8rem 0; }
  #classes { display: flex; gap: 0.5rem; flex-wrap: wrap; }
  #classes div { border: 1px solid #d8dce6; border-radius: 6px; padding: 0.3rem 0.7rem; min-width: 3rem; text-align: center; }
  #classes b { display: block; font-size: 1.2rem; }
  #timeline { border: 1px solid #d8dce6; background: #fafbfc; }
  #filters label { margin-right: 0.6rem; }
</style>
</head>
<body>
<h1>sealed-edge cockpit</h1>
<div id="status">Labels decrypted by the backend; devices never see them.</div>
<p id="legend">⚠ out of range: the scores lay outside the range the model was calibrated on (the encrypted computation may have overflowed), so no label was kept. ✗ not decrypted: the encrypted result was refused (the audit log says why).</p>
<form id="login"><input id="token" type="password" placeholder="operator token" size="40" autocomplete="off" /> <button>Open</button></form>
<h2>Last hour, per class</h2>
<div id="classes"></div>
<svg id="timeline" width="720" height="140" role="img" aria-label="results per minute, last hour"></svg>
<h2>Devices</h2>
<table><thead><tr><th>device</th><th>latest label</th><th>last 10</th><th>results</th><th>out of range</th><th>noise budget</th><th>per minute</th><th>last seen</th><th>last captured</th></tr></thead><tbody id="devices"></tbody></table>
<h2>Results</h2>
<form id="filters">
  <label>device <select id="f-device"><option value="">all</option></select></label>
  <label>model <input id="f-model" size="10" /></label>
  <label>version <input id="f-version" type="number" min="1" style="width: 4rem" /></label>
  <label>received from <input id="f-since" type="datetime-local" step="1" /></label>
  <label>to <input id="f-until" type="datetime-local" step="1" /></label>
  <label>order by <select id="f-sort"><option value="captured">capture time</option><option value="received">receipt time</option></select></label>
  <button>Show</button> <span id="f-error" class="flagged"></span>
</form>
<table><thead><tr><th>result</th><th>device</th><th>model</th><th>label</th><th>captured (device)</th><th>received</th></tr></thead><tbody id="results"></tbody></table>
<script type="module">
const FLAGGED = '⚠';
const FAILED = '✗';
const OUTCOMES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'out-of-range', 'failed'];
const SHOWN = 200;
const status = document.getElementById('status');
const body = document.getElementById('devices');
let headers = {};
const devices = new Map();
const seen = new Set();
let stats = { outcomes: {}, devices: [], timeline: [] };
let results = [];
let filter = {};

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : '—');
const outcomeOf = (r) => (r.state === 'failed' ? 'failed' : r.rangeFlag ? 'out-of-range' : String(r.label));
const shown = (o) => (o === 'failed' ? FAILED : o === 'out-of-range' ? FLAGGED : o);
function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.append(td);
}

function renderDevices() {
  const rates = new Map(stats.devices.map((d) => [d.deviceId, d]));
  body.replaceChildren(...[...devices.entries()].sort().map(([id, d]) => {
    const row = document.createElement('tr');
    row.dataset.device = id;
    const budget = d.latest.noiseBudgetBits === null || d.latest.noiseBudgetBits === undefined ? '—' : d.latest.noiseBudgetBits + ' bits';
    const latest = d.latest.state === 'failed' ? [FAILED + ' not decrypted', 'label failed'] : d.latest.rangeFlag ? [FLAGGED + ' out of range', 'label flagged'] : [String(d.latest.label), 'label'];
    const rate = rates.get(id);
    cell(row, id.slice(0, 8), '');
    cell(row, latest[0], latest[1]);
    cell(row, d.labels.slice(-10).join(' '), 'labels');
    cell(row, String(d.count), 'count');
    cell(row, String(d.flagged), d.flagged ? 'out-of-range flagged' : 'out-of-range');
    cell(row, budget, 'budget');
    cell(row, rate ? String(rate.lastMinute) : '0', 'rate');
    cell(row, time(d.lastReceivedAt), 'seen');
    cell(row, time(d.lastCapturedAt), 'captured');
    return row;
  }));
  const select = document.getElementById('f-device');
  const chosen = select.value;
  select.replaceChildren(new Option('all', ''), ...[...devices.keys()].sort().map((id) => new Option(id.slice(0, 8), id)));
  select.value = chosen;
}

function renderClasses() {
  const box = document.getElementById('classes');
  box.replaceChildren(...OUTCOMES.map((o) => {
    const div = document.createElement('div');
    div.dataset.outcome = o;
    const b = document.createElement('b');
    b.textContent = String(stats.outcomes[o] ?? 0);
    div.append(shown(o), b);
    return div;
  }));
  const svg = document.getElementById('timeline');
  const ns = 'http://www.w3.org/2000/svg';
  const end = Date.now();
  const minutes = Array.from({ length: 60 }, (_, i) => new Date(end - (59 - i) * 60000).toISOString().slice(0, 16));
  const byMinute = new Map(stats.timeline.map((t) => [t.minute, t.outcomes]));
  const totals = minutes.map((m) => Object.entries(byMinute.get(m) ?? {}).filter(([o]) => o !== 'pending').reduce((s, [, n]) => s + n, 0));
  const top = Math.max(1, ...totals);
  const axis = (x, anchor, text) => {
    const t = document.createElementNS(ns, 'text');
    t.setAttribute('x', String(x));
    t.setAttribute('y', '139');
    t.setAttribute('font-size', '9');
    t.setAttribute('text-anchor', anchor);
    t.textContent = text;
    return t;
  };
  svg.replaceChildren(axis(0, 'start', '60 min ago'), axis(718, 'end', 'now (per minute, ' + top + ' at most)'), ...minutes.map((m, i) => {
    const rect = document.createElementNS(ns, 'rect');
    const h = Math.round((totals[i] / top) * 118);
    rect.setAttribute('x', String(i * 12));
    rect.setAttribute('y', String(128 - h));
    rect.setAttribute('width', '10');
    rect.setAttribute('height', String(h));
    rect.setAttribute('fill', '#3b6fd4');
    rect.dataset.minute = m;
    rect.dataset.count = String(totals[i]);
    const title = document.createElementNS(ns, 'title');
    title.textContent = m.slice(11) + ' UTC: ' + totals[i];
    rect.append(title);
    return rect;
  }));
}

function renderResults() {
  const key = document.getElementById('f-sort').value === 'received' ? (r) => r.receivedAt : (r) => r.capturedAt ?? r.receivedAt;
  results.sort((a, b) => (key(a) < key(b) ? 1 : key(a) > key(b) ? -1 : b.id - a.id));
  results = results.slice(0, SHOWN);
  document.getElementById('results').replaceChildren(...results.map((r) => {
    const row = document.createElement('tr');
    row.dataset.result = String(r.id);
    cell(row, String(r.id), '');
    cell(row, r.deviceId.slice(0, 8), '');
    cell(row, r.modelId + ' v' + r.version, '');
    cell(row, r.state === 'pending' ? '…' : shown(outcomeOf(r)), 'label');
    cell(row, r.capturedAt ? new Date(r.capturedAt).toLocaleString() : '—', 'captured');
    cell(row, new Date(r.receivedAt).toLocaleString(), 'received');
    return row;
  }));
}

function matches(r) {
  return (!filter.deviceId || r.deviceId === filter.deviceId) && (!filter.modelId || r.modelId === filter.modelId) &&
    (!filter.version || r.version === Number(filter.version)) && (!filter.since || r.receivedAt >= filter.since) && (!filter.until || r.receivedAt < filter.until);
}

/** One result into the devices' rows; false when it was seen already. */
function add(r) {
  if (r.state === 'pending' || seen.has(r.id)) return false;
  seen.add(r.id);
  const d = devices.get(r.deviceId) ?? { labels: [], count: 0, flagged: 0 };
  d.labels.push(r.state === 'failed' ? FAILED : r.rangeFlag ? FLAGGED : String(r.label)); d.count++; d.latest = r;
  if (r.rangeFlag) d.flagged++;
  if (!d.lastReceivedAt || r.receivedAt > d.lastReceivedAt) d.lastReceivedAt = r.receivedAt;
  if (r.capturedAt && (!d.lastCapturedAt || r.capturedAt > d.lastCapturedAt)) d.lastCapturedAt = r.capturedAt;
  devices.set(r.deviceId, d);
  return true;
}

/** An announced result: the devices, the class counts, the timeline and (if it matches) the results table. */
function live(r) {
  if (!add(r)) return;
  const o = outcomeOf(r);
  stats.outcomes[o] = (stats.outcomes[o] ?? 0) + 1;
  const minute = r.receivedAt.slice(0, 16);
  let slot = stats.timeline.find((t) => t.minute === minute);
  if (!slot) stats.timeline.push((slot = { minute, outcomes: {} }));
  slot.outcomes[o] = (slot.outcomes[o] ?? 0) + 1;
  if (matches(r)) {
    results = results.filter((x) => x.id !== r.id);
    results.push(r);
    renderResults();
  }
  renderDevices();
  renderClasses();
}

async function get(path) {
  const response = await fetch(path, { headers });
  const json = await response.json();
  if (!response.ok) throw new Error(json.error.message);
  return json;
}

async function refreshStats() {
  stats = await get('api/v1/stats?since=' + encodeURIComponent(new Date(Date.now() - 3600000).toISOString()));
  renderClasses();
  renderDevices();
}

async function loadResults() {
  const query = new URLSearchParams({ limit: String(SHOWN), order: 'desc' });
  for (const [k, v] of Object.entries(filter)) if (v) query.set(k, v);
  results = (await get('api/v1/results?' + query)).results;
  renderResults();
}

async function load() {
  const latest = (await get('api/v1/results?order=desc&limit=2000')).results;
  for (const r of latest.reverse()) add(r);
  await Promise.all([refreshStats(), loadResults()]);
}

const localToIso = (v) => (v ? new Date(v).toISOString() : '');
document.getElementById('filters').addEventListener('submit', (e) => {
  e.preventDefault();
  filter = {
    deviceId: document.getElementById('f-device').value,
    modelId: document.getElementById('f-model').value.trim(),
    version: document.getElementById('f-version').value,
    since: localToIso(document.getElementById('f-since').value),
    until: localToIso(document.getElementById('f-until').value),
  };
  document.getElementById('f-error').textContent = '';
  loadResults().catch((error) => (document.getElementById('f-error').textContent = error.message));
});
document.getElementById('f-sort').addEventListener('change', renderResults);

async function open(token) {
  headers = { authorization: 'Bearer ' + token };
  try {
    await load();
  } catch (error) {
    status.textContent = 'Refused: ' + error.message;
    return;
  }
  sessionStorage.setItem('sealed-edge-operator', token);
  document.getElementById('login').hidden = true;
  status.textContent = 'Live.';
  setInterval(() => refreshStats().catch(() => undefined), 10000);
  const stream = await fetch('api/v1/results/stream', { headers });
  const reader = stream.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { status.textContent = 'Stream closed; reload to reconnect.'; return; }
    buffer += value;
    let end;
    while ((end = buffer.indexOf('\\n\\n')) >= 0) {
      const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
      const lines = event.split('\\n');
      const data = lines.find((l) => l.startsWith('data: '));
      // resync: the backend may have missed announcing results (its database connection
      // dropped); what is stored is read again, and what is new is added.
      if (lines.includes('event: resync')) load().catch(() => undefined);
      else if (data) live(JSON.parse(data.slice(6)));
    }
  }
}
document.getElementById('login').addEventListener('submit', (e) => { e.preventDefault(); open(document.getElementById('token').value); });
const saved = sessionStorage.getItem('sealed-edge-operator');
if (saved) open(saved);
</script>
</body>
</html>
`;
