// Yjs: text is a root Y.Text, assets Y.Map values of a root Y.Map. Catch-up is state-vector
// sync: the replica behind sends its state vector, the one ahead answers with the update it
// lacks (y-protocols' SyncStep1/SyncStep2 payloads, without their framing).
'use strict';

const Y = require('yjs');

const REMOTE = Symbol('remote');  // the origin of merged updates, which are not re-sent

class YjsDoc {
  constructor(track, clientID) {
    this.doc = new Y.Doc();
    // Yjs orders concurrent inserts at one position by client id; the concurrent traces
    // recorded theirs with agent 0 first, so client ids follow agent numbers.
    if (clientID !== undefined) this.doc.clientID = clientID;
    this.t = this.doc.getText('text');
    this.assets = this.doc.getMap('assets');
    this.local = [];
    if (track) this.doc.on('update', (update, origin) => { if (origin !== REMOTE) this.local.push(update); });
  }

  edit(patches) {
    const t = this.t;
    this.doc.transact(() => {
      for (const [pos, deleted, inserted] of patches) {
        if (deleted) t.delete(pos, deleted);
        if (inserted) t.insert(pos, inserted);
      }
    });
  }

  settle() {}

  text() { return this.t.toString(); }

  seed(ids, initial) {
    this.doc.transact(() => {
      ids.forEach((id, i) => this.assets.set(id, new Y.Map(Object.entries(initial[i]))));
    });
  }

  put(id, fields) {
    const asset = this.assets.get(id);
    this.doc.transact(() => { for (const [k, v] of Object.entries(fields)) asset.set(k, v); });
  }

  content() { return this.assets.toJSON(); }

  takeLocal() {
    const out = this.local;
    this.local = [];
    return out;
  }

  merge(updates) { for (const u of updates) Y.applyUpdate(this.doc, u, REMOTE); }

  encode() { return Y.encodeStateAsUpdate(this.doc); }

  fullUpdate() { return this.encode(); }
}

module.exports = {
  name: 'yjs',
  unit: 'utf16',  // JavaScript strings: UTF-16 code units
  version: () => require('yjs/package.json').version,
  newDoc: (agent, track) => new YjsDoc(track, agent + 1),
  mergeNew(update) {
    const doc = new YjsDoc(false);
    Y.applyUpdate(doc.doc, update);
    return doc;
  },
  beforeLoad: () => ({}),
  load(doc, state) { return this.mergeNew(state); },  // one format for storage and sync
  catchUp(ahead, behind) {
    const t0 = performance.now();
    const vector = Y.encodeStateVector(behind.doc);
    const update = Y.encodeStateAsUpdate(ahead.doc, vector);
    Y.applyUpdate(behind.doc, update);
    const seconds = (performance.now() - t0) / 1000;
    return {bytes: vector.length + update.length, seconds,
      detail: {state_vector: vector.length, update: update.length}};
  },
  extra: () => ({}),
};
