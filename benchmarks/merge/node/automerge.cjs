// Automerge 3 through its document core (Automerge.getBackend: the wasm document), one
// commit per transaction: splice into a text object, put scalar fields into asset maps.
// The change() proxy API adds about 1 ms per transaction here (it keeps a materialised JS
// view up to date), which would take a long trace past the run's time budget; the core is
// what pycrdt, Yjs and Loro are driven through too. Local edits go out as binary changes;
// storage is save(); a new replica merges a saved document with loadIncremental; loading is
// the public load(). Catch-up is Automerge's sync protocol through the public API; each side
// keeps its sync state for the other between catch-ups, as automerge-repo persists it (a
// fresh state costs a Bloom filter of the whole history: tens of KB on a long trace).
'use strict';

const fs = require('fs');
const path = require('path');
const A = require('@automerge/automerge');

// Actor ids follow agent numbers, so runs are repeatable. (Unlike Yjs, see yjs.cjs,
// Automerge reaches the concurrent traces' endContent with actor ids in either order.)
const actor = (agent) => (agent + 1).toString(16).padStart(32, '0');

class AutomergeDoc {
  constructor(handle, track) {
    this.h = handle;
    this.track = track;
    this.local = [];
    this.ids = new Map();  // object ids: 'text', 'assets', then asset ids
  }

  _obj(parent, key) {
    let id = this.ids.get(key);
    if (id === undefined) {
      const got = this.h.getWithType(parent, key);
      if (!got) return null;
      id = got[1];
      this.ids.set(key, id);
    }
    return id;
  }

  _commit() {
    const hash = this.h.commit();  // null for a transaction that changed nothing
    if (this.track && hash) {
      const change = this.h.getLastLocalChange();
      if (change) this.local.push(change);
    }
  }

  edit(patches) {
    let text = this._obj('_root', 'text');
    if (text === null) {  // the first edit creates the text, once; others merge it
      text = this.h.putObject('_root', 'text', '');
      this.ids.set('text', text);
    }
    for (const [pos, deleted, inserted] of patches) this.h.splice(text, pos, deleted, inserted);
    this._commit();
  }

  settle() {}

  text() {
    const text = this._obj('_root', 'text');
    return text === null ? '' : this.h.text(text);
  }

  seed(ids, initial) {
    let assets = this._obj('_root', 'assets');
    if (assets === null) {
      assets = this.h.putObject('_root', 'assets', {});
      this.ids.set('assets', assets);
    }
    ids.forEach((id, i) => {
      const asset = this.h.putObject(assets, id, {});
      for (const [k, v] of Object.entries(initial[i])) this.h.put(asset, k, v);
    });
    this._commit();
  }

  put(id, fields) {
    const asset = this._obj(this._obj('_root', 'assets'), id);
    for (const [k, v] of Object.entries(fields)) this.h.put(asset, k, v);
    this._commit();
  }

  content() {
    const assets = this._obj('_root', 'assets');
    return assets === null ? {} : this.h.materialize(assets);
  }

  takeLocal() {
    const out = this.local;
    this.local = [];
    return out;
  }

  merge(changes) {
    if (changes.length) this.h.applyChanges(changes);
  }

  encode() { return this.h.save(); }

  fullUpdate() { return this.encode(); }
}

function sync(ahead, behind, states) {
  let [sa, sb] = states;
  let bytes = 0;
  let messages = 0;
  for (;;) {
    let fromAhead;
    let fromBehind;
    [sa, fromAhead] = A.generateSyncMessage(ahead, sa);
    if (fromAhead) {
      bytes += fromAhead.length;
      messages++;
      [behind, sb] = A.receiveSyncMessage(behind, sb, fromAhead);
    }
    [sb, fromBehind] = A.generateSyncMessage(behind, sb);
    if (fromBehind) {
      bytes += fromBehind.length;
      messages++;
      [ahead, sa] = A.receiveSyncMessage(ahead, sa, fromBehind);
    }
    if (!fromAhead && !fromBehind) return {behind, bytes, messages, states: [sa, sb]};
  }
}

module.exports = {
  name: 'automerge',
  unit: 'utf16',  // the JavaScript build of Automerge indexes text in UTF-16 code units
  version: () => JSON.parse(fs.readFileSync(
    path.join(process.env.NODE_PATH, '@automerge', 'automerge', 'package.json'), 'utf8')).version,
  newDoc: (agent, track) => new AutomergeDoc(A.getBackend(A.init({actor: actor(agent)})), track),
  mergeNew(update) {
    const doc = new AutomergeDoc(A.getBackend(A.init()), false);
    doc.h.loadIncremental(update);
    return doc;
  },
  beforeLoad: () => ({}),
  load: (doc, state) => new AutomergeDoc(A.getBackend(A.load(state)), false),
  catchUp(ahead, behind) {
    // The sync protocol works on public documents: both sides are loaded as such first
    // (untimed), and the replica behind continues from the synced one.
    const jsAhead = A.load(ahead.h.save());
    const jsBehind = A.load(behind.h.save());
    const states = behind.syncStates || [A.initSyncState(), A.initSyncState()];
    const t0 = performance.now();
    const out = sync(jsAhead, jsBehind, states);
    const seconds = (performance.now() - t0) / 1000;
    behind.h = A.getBackend(out.behind);
    behind.ids.clear();
    behind.syncStates = out.states;
    return {bytes: out.bytes, seconds, detail: {messages: out.messages}};
  },
  extra: () => ({}),
};
