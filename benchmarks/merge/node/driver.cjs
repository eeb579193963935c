// The merge benchmark's workloads for Node engines: the same steps, in the same order, as
// benchmarks/merge/driver.py (keep them alike). Started by benchmarks/merge/nodejs.py with
// NODE_PATH pointing at the .bench-node packages; talks to the parent in the protocol of
// benchmarks/_harness.py: lines starting "@bench " with {progress} ticks, then one {result}.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const MARK = '@bench ';
const MB = 1024 * 1024;

function send(message) {
  process.stdout.write(MARK + JSON.stringify(message) + '\n');
}

function parseArgs(argv) {
  const args = {behind: ''};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-/g, '_');
    args[key] = argv[i + 1];
  }
  return args;
}

const now = () => performance.now() / 1000;

// Peak RSS of this process: VmHWM, not getrusage's maxRSS, which Linux carries over exec
// from the Python process this one replaced.
function peakRssMb() {
  try {
    const m = fs.readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+)/);
    if (m) return Number(m[1]) / 1024;
  } catch (e) { /* not Linux: fall back */ }
  return process.resourceUsage().maxRSS / 1024;
}

function readInts(file) {
  const buf = fs.readFileSync(file);
  // copy into a buffer of our own: a pooled Buffer need not be 4-byte aligned
  return new Int32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
}

function* chunks(total, parts = 100) {
  const step = Math.max(1, Math.ceil(total / parts));
  for (let lo = 0; lo < total; lo += step) yield [lo, Math.min(total, lo + step)];
}

function check(what, got, expected) {
  if (got === expected) return;
  let at = 0;
  while (at < got.length && at < expected.length && got[at] === expected[at]) at++;
  throw new Error(`${what}: text differs from the expected at character ${at} (got ${got.length}` +
    ` characters, expected ${expected.length}): ${JSON.stringify(got.slice(at, at + 30))} != ` +
    `${JSON.stringify(expected.slice(at, at + 30))}`);
}

function deepEqual(a, b) {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  const out = {};
  for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]);
  return out;
}

// The offsets into the inserted text count code points; JavaScript strings index UTF-16
// code units, so a text with characters beyond the BMP needs them mapped.
function utf16Offsets(starts, inserts) {
  const map = new Int32Array(starts[starts.length - 1] + 1);
  let cp = 0;
  let unit = 0;
  for (const ch of inserts) {  // iterates code points
    map[cp++] = unit;
    unit += ch.length;
  }
  map[cp] = unit;
  return starts.map((s) => map[s]);
}

class Patches {
  constructor(folder, meta, unit) {
    const u = meta.ascii ? 'cp' : unit;
    this.pos = readInts(path.join(folder, `pos.${u}.i32`));
    this.del = readInts(path.join(folder, `del.${u}.i32`));
    this.starts = readInts(path.join(folder, 'starts.i32'));
    this.ends = readInts(path.join(folder, 'ends.i32'));
    this.inserts = meta.inserts;
    if (!meta.ascii) this.starts = utf16Offsets(this.starts, meta.inserts);
  }

  txn(j) {
    const out = [];
    for (let i = j ? this.ends[j - 1] : 0; i < this.ends[j]; i++) {
      out.push([this.pos[i], this.del[i], this.inserts.slice(this.starts[i], this.starts[i + 1])]);
    }
    return out;
  }
}

function figures(engine, kind, txns) {
  return {engine: engine.name, version: engine.version(), kind, txns,
    rss_base_mb: process.memoryUsage().rss / MB, catchup: {}};
}

function stateAndLoad(engine, doc, out, read, expected) {
  let t0 = now();
  const state = doc.encode();
  out.encode_s = now() - t0;
  out.state_bytes = state.length;
  const prepared = engine.beforeLoad(doc);
  t0 = now();
  const loaded = engine.load(doc, state);
  const got = read(loaded);
  out.load_s = now() - t0;
  if (!deepEqual(got, expected)) throw new Error(`${engine.name}: the document reopened from its state differs`);
  out.extra = {...engine.extra(loaded), ...prepared};
}

// -- a sequential trace ------------------------------------------------------------------
function catchupWindows(n, behind) {
  const ks = [];
  let sum = 0;
  for (const k of [...new Set(behind.filter((k) => k > 0))].sort((a, b) => a - b)) {
    if (sum + k >= n) break;
    ks.push(k);
    sum += k;
  }
  return ks.reverse();
}

function replay(trace, doc, lo, hi, tick) {
  let spent = 0;
  for (const [a, b] of chunks(hi - lo)) {
    const t0 = now();
    for (let j = lo + a; j < lo + b; j++) doc.edit(trace.txn(j));
    spent += now() - t0;
    tick(lo + b);
  }
  const t0 = now();
  doc.settle();
  return spent + now() - t0;
}

function sequential(engine, folder, meta, behind, tick) {
  const trace = new Patches(folder, meta, engine.unit);
  const n = meta.txns;
  const out = figures(engine, 'sequential', n);
  const ks = catchupWindows(n, behind);
  const start = n - ks.reduce((a, b) => a + b, 0);
  const doc = engine.newDoc(0, false);
  if (meta.start) doc.edit([[0, 0, meta.start]]);
  let applyS = replay(trace, doc, 0, start, tick);
  out.rss_apply_mb = peakRssMb();
  const full = doc.fullUpdate();
  let t0 = now();
  const behindDoc = engine.mergeNew(full);
  const mergedText = behindDoc.text();
  out.merge_s = now() - t0;
  out.merge_at = start;
  check(`${engine.name}: a new replica merging the whole document`, mergedText, doc.text());
  engine.catchUp(doc, behindDoc);  // untimed: a sync state kept per peer (Automerge) starts here
  let at = start;
  for (const k of ks) {
    applyS += replay(trace, doc, at, at + k, tick);
    at += k;
    const cu = engine.catchUp(doc, behindDoc);
    check(`${engine.name} catching up ${k} edits`, behindDoc.text(), doc.text());
    out.catchup[String(k)] = cu;
  }
  out.apply_s = applyS;
  const text = doc.text();
  check(`${engine.name} after the replay`, text, meta.end);
  stateAndLoad(engine, doc, out, (d) => d.text(), text);
  out.rss_peak_mb = peakRssMb();
  return [out, text];
}

// -- a concurrent trace ------------------------------------------------------------------
function concurrent(engine, folder, meta, tick) {
  const trace = new Patches(folder, meta, 'cp');  // the parent sends only ASCII traces here
  const agent = readInts(path.join(folder, 'agent.i32'));
  const exportFlags = readInts(path.join(folder, 'export.i32'));
  const ends = readInts(path.join(folder, 'merge_ends.i32'));
  const segs = readInts(path.join(folder, 'merge_segs.i32'));
  const out = figures(engine, 'concurrent', meta.txns);
  const docs = [];
  for (let a = 0; a < meta.agents; a++) docs.push(engine.newDoc(a, true));
  const segments = [];
  let applyS = 0;
  let mergeS = 0;
  for (const [lo, hi] of chunks(meta.txns)) {
    for (let j = lo; j < hi; j++) {
      const doc = docs[agent[j]];
      const patches = trace.txn(j);
      const t0 = now();
      for (let i = j ? ends[j - 1] : 0; i < ends[j]; i++) doc.merge(segments[segs[i]]);
      const t1 = now();
      doc.edit(patches);
      if (exportFlags[j]) segments.push(doc.takeLocal());
      const t2 = now();
      mergeS += t1 - t0;
      applyS += t2 - t1;
    }
    tick(hi);
  }
  const final = docs[agent[meta.txns - 1]];
  const t0 = now();
  final.settle();
  Object.assign(out, {apply_s: applyS + now() - t0, merge_s: mergeS, rss_apply_mb: peakRssMb(),
    segments: meta.segments, merges: meta.merges});
  const text = final.text();
  stateAndLoad(engine, final, out, (d) => d.text(), text);
  out.rss_peak_mb = peakRssMb();
  return [out, text];
}

// -- the field-team workload -------------------------------------------------------------
function fieldTeam(engine, folder, tick) {
  const w = JSON.parse(fs.readFileSync(path.join(folder, 'field.json'), 'utf8'));
  const {ids, initial} = w;
  const batches = Math.ceil(ids.length / w.seed_batch);
  const out = figures(engine, 'field', batches + w.rounds * w.devices * w.edits);
  const docs = [];
  for (let d = 0; d < w.devices; d++) docs.push(engine.newDoc(d, true));
  let t0 = now();
  for (let lo = 0; lo < ids.length; lo += w.seed_batch) {
    docs[0].seed(ids.slice(lo, lo + w.seed_batch), initial.slice(lo, lo + w.seed_batch));
  }
  docs[0].settle();
  const seeded = docs[0].takeLocal();
  const t1 = now();
  for (const doc of docs.slice(1)) doc.merge(seeded);
  let applyS = t1 - t0;
  let mergeS = now() - t1;
  let done = batches;
  tick(done);
  for (const sessions of w.work) {
    const updates = [];
    sessions.forEach((session, device) => {
      const doc = docs[device];
      const s0 = now();
      for (const [asset, fields] of session) doc.put(ids[asset], fields);
      doc.settle();
      updates.push(doc.takeLocal());
      applyS += now() - s0;
      done += session.length;
      tick(done);
    });
    t0 = now();
    updates.forEach((update, device) => {
      docs.forEach((doc, other) => { if (other !== device) doc.merge(update); });
    });
    mergeS += now() - t0;
  }
  Object.assign(out, {apply_s: applyS, merge_s: mergeS, rss_apply_mb: peakRssMb()});
  const contents = docs.map((d) => d.content());
  contents.forEach((c, device) => {
    if (!deepEqual(c, contents[0])) throw new Error(`${engine.name}: device ${device} disagrees with device 0`);
  });
  stateAndLoad(engine, docs[0], out, (d) => d.content(), contents[0]);
  out.rss_peak_mb = peakRssMb();
  return [out, contents[0]];
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  if (os.endianness() !== 'LE') throw new Error('the workload files are little-endian');
  const engine = require(args.adapter);
  const folder = args.workload;
  const meta = JSON.parse(fs.readFileSync(path.join(folder, 'meta.json'), 'utf8'));
  const tick = (done) => send({progress: done});
  let result;
  let content;
  if (meta.kind === 'sequential') {
    const behind = args.behind.split(',').filter((k) => k).map(Number);
    [result, content] = sequential(engine, folder, meta, behind, tick);
  } else if (meta.kind === 'concurrent') {
    [result, content] = concurrent(engine, folder, meta, tick);
  } else {
    const [r, assets] = fieldTeam(engine, folder, tick);
    result = r;
    content = JSON.stringify(assets);
  }
  fs.writeFileSync(args.content, content, 'utf8');
  send({result});
}

main();
