// check_mermaid.mjs NODE_MODULES G.MMD WANT.JSON: Mermaid's own parser
// (the mermaid package under jsdom) reads graph_names' flowchart, and each
// node's label, decoded as Mermaid renders it (entity codes, then HTML),
// shows the name exactly as given.
import { createRequire } from 'module';
import { readFileSync } from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const [nm, mmd, wantPath] = process.argv.slice(2);
const require = createRequire(path.join(nm, 'index.js'));
const { JSDOM } = require('jsdom');
const dom = new JSDOM('<!DOCTYPE html><body></body>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const mermaidPath = path.join(nm, 'mermaid', 'dist', 'mermaid.core.mjs');
const { default: mermaid } = await import(pathToFileURL(mermaidPath).href);
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });

const text = readFileSync(mmd, 'utf8');
const want = JSON.parse(readFileSync(wantPath, 'utf8'));
await mermaid.parse(text); // throws on a syntax error
const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
const vertices = diagram.db.getVertices();
// What the renderer does with a label: entity codes (kept as placeholders by
// the parser) back to HTML entities, then the HTML's text.
const decode = (s) => {
  const html = s.replace(/ﬂ°°/g, '&#').replace(/ﬂ°/g, '&').replace(/¶ß/g, ';');
  const div = dom.window.document.createElement('div');
  div.innerHTML = html;
  return div.textContent;
};
let bad = 0;
for (const [id, w] of Object.entries(want)) {
  const v = vertices.get(id);
  const got = v ? decode(v.text) : undefined;
  if (got !== w.mermaid) {
    console.log(`FAIL: ${id} shows ${JSON.stringify(got)}, want ${JSON.stringify(w.mermaid)}`);
    bad = 1;
  }
}
if (bad) process.exit(1);
console.log('ok: Mermaid parses the flowchart and shows every hostile name exactly');
