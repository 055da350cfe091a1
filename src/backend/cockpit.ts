/**
 * The operators' cockpit: per device, the latest labels, how many results were flagged
 * out of range (CKKS scores beyond the calibrated range: no label, a ⚠ marker in its
 * place), the noise budget the latest BGV result had left when it was decrypted, and when
 * they arrived, live from the results stream: a result appears once it is decrypted (or
 * has failed, ✗), in the order decryption finished, whichever instance decrypted it; on a
 * `resync` event the results are read again. The operator token is kept in this tab's
 * sessionStorage only.
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
  table { border-collapse: collapse; margin-top: 1rem; min-width: 32rem; }
  th, td { border-bottom: 1px solid #d8dce6; padding: 0.35rem 0.6rem; text-align: left; }
  th { background: #f3f5f9; }
  .label { font-size: 1.3rem; font-weight: 700; }
  .flagged { color: #b42318; }
  #status { color: #57606a; }
  form { margin: 0.8rem 0; }
</style>
</head>
<body>
<h1>sealed-edge cockpit</h1>
<div id="status">Labels decrypted by the backend; devices never see them.</div>
<p id="legend">⚠ out of range: the scores lay outside the range the model was calibrated on (the encrypted computation may have overflowed), so no label was kept. ✗ not decrypted: the encrypted result was refused (the audit log says why).</p>
<form id="login"><input id="token" type="password" placeholder="operator token" size="40" autocomplete="off" /> <button>Open</button></form>
<table><thead><tr><th>device</th><th>latest label</th><th>last 10</th><th>results</th><th>out of range</th><th>noise budget</th><th>received</th></tr></thead><tbody id="devices"></tbody></table>
<script type="module">
const devices = new Map();
const FLAGGED = '⚠';
const FAILED = '✗';
const status = document.getElementById('status');
const body = document.getElementById('devices');
function render() {
  body.replaceChildren(...[...devices.entries()].sort().map(([id, d]) => {
    const row = document.createElement('tr');
    row.dataset.device = id;
    const budget = d.latest.noiseBudgetBits === null || d.latest.noiseBudgetBits === undefined ? '—' : d.latest.noiseBudgetBits + ' bits';
    const latest = d.latest.state === 'failed' ? [FAILED + ' not decrypted', 'label failed'] : d.latest.rangeFlag ? [FLAGGED + ' out of range', 'label flagged'] : [String(d.latest.label), 'label'];
    for (const [text, cls] of [[id.slice(0, 8), ''], latest, [d.labels.slice(-10).join(' '), 'labels'], [String(d.count), 'count'], [String(d.flagged), d.flagged ? 'out-of-range flagged' : 'out-of-range'], [budget, 'budget'], [new Date(d.latest.receivedAt).toLocaleTimeString(), '']]) {
      const cell = document.createElement('td');
      cell.textContent = text;
      if (cls) cell.className = cls;
      row.append(cell);
    }
    return row;
  }));
}
const seen = new Set();
function add(r) {
  if (r.state === 'pending' || seen.has(r.id)) return false;
  seen.add(r.id);
  const d = devices.get(r.deviceId) ?? { labels: [], count: 0, flagged: 0 };
  d.labels.push(r.state === 'failed' ? FAILED : r.rangeFlag ? FLAGGED : String(r.label)); d.count++; d.latest = r;
  if (r.rangeFlag) d.flagged++;
  devices.set(r.deviceId, d);
  return true;
}
async function load(headers) {
  const response = await fetch('api/v1/results?limit=10000', { headers });
  if (!response.ok) return response;
  for (const r of (await response.json()).results) add(r);
  render();
  return response;
}
async function open(token) {
  const headers = { authorization: 'Bearer ' + token };
  const first = await load(headers);
  if (!first.ok) { status.textContent = 'Refused: ' + (await first.json()).error.message; return; }
  sessionStorage.setItem('sealed-edge-operator', token);
  document.getElementById('login').hidden = true;
  status.textContent = 'Live.';
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
      if (lines.includes('event: resync')) load(headers).catch(() => undefined);
      else if (data && add(JSON.parse(data.slice(6)))) render();
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
