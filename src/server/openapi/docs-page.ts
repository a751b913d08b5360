import { createHash } from 'node:crypto';

/**
 * The browsable documentation at /docs: one self-contained page that renders /openapi.json
 * with a small inline script. No external scripts, fonts or styles, so it works offline and
 * behind egress filters.
 */
export const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Arbiter API</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem 2rem; color: #1d232a; }
  h1 { margin-bottom: 0; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .25rem; margin-top: 2.5rem; }
  details { border: 1px solid #d0d7de; border-radius: 6px; margin: .5rem 0; }
  summary { cursor: pointer; padding: .5rem .75rem; font-family: ui-monospace, monospace; }
  details > div { padding: 0 1rem 1rem; }
  .method { display: inline-block; min-width: 4.5rem; font-weight: 700; text-transform: uppercase; }
  .get { color: #0969da; } .post { color: #1a7f37; } .put { color: #9a6700; } .patch { color: #8250df; } .delete { color: #cf222e; }
  .scope { font-size: .85em; background: #fff8c5; border-radius: 4px; padding: 0 .4rem; margin-left: .5rem; }
  pre { background: #f6f8fa; padding: .75rem; border-radius: 6px; overflow: auto; font-size: 13px; }
  table { border-collapse: collapse; } td, th { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; vertical-align: top; }
  code { font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1 id="title">Arbiter API</h1>
<p id="description"></p>
<p><a href="openapi.json">openapi.json</a></p>
<main id="api">Loading openapi.json…</main>
<script>
(function () {
  'use strict';
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    (children || []).forEach(function (child) { node.append(child); });
    return node;
  }
  function text(tag, value, attrs) { return el(tag, attrs, [String(value)]); }
  function json(value) { return text('pre', JSON.stringify(value, null, 2)); }
  function table(head, rows) {
    return el('table', {}, [el('tr', {}, head.map(function (h) { return text('th', h); }))].concat(rows.map(function (row) {
      return el('tr', {}, row.map(function (cell) { return text('td', cell); }));
    })));
  }

  // What an operation's security requirements ask of the caller: an admin scope, or the gateway
  // scheme (which has none: reading only scopes showed decision endpoints as unauthenticated).
  function authentication(op, schemes) {
    var said = (op.security || []).flatMap(function (requirement) {
      return Object.keys(requirement).map(function (name) {
        if (requirement[name].length) return 'Admin bearer token with scope ' + requirement[name].join(', ');
        var scheme = schemes[name] || {};
        var where = scheme.type === 'apiKey' ? ' (' + scheme.name + ' ' + scheme.in + ')' : '';
        return 'Gateway authentication' + where + ': ' + (scheme.description || scheme.type || name);
      });
    });
    return said.length ? said.join('; or ') : 'No authentication';
  }

  function operation(method, path, op, schemes) {
    var body = el('div');
    if (op.description) body.append(text('p', op.description));
    var scopes = (op.security || []).flatMap(function (s) { return Object.values(s).flat(); });
    body.append(text('p', authentication(op, schemes)));
    if (op.parameters) {
      body.append(text('h4', 'Parameters'));
      body.append(table(['name', 'in', 'required', 'description'], op.parameters.map(function (p) {
        return [p.name, p.in, p.required ? 'yes' : 'no', p.description || JSON.stringify(p.schema)];
      })));
    }
    if (op.requestBody) {
      body.append(text('h4', 'Request body'));
      if (op.requestBody.description) body.append(text('p', op.requestBody.description));
      // A binary body (a bundle archive) is a media type without a schema: its name says it all.
      Object.keys(op.requestBody.content).forEach(function (type) {
        var schema = op.requestBody.content[type].schema;
        body.append(text('p', type));
        if (schema) body.append(json(schema));
      });
    }
    body.append(text('h4', 'Responses'));
    Object.keys(op.responses).forEach(function (status) {
      var response = op.responses[status];
      body.append(el('p', {}, [text('strong', status), ' ' + response.description]));
      Object.keys(response.content || {}).forEach(function (type) {
        var schema = response.content[type].schema;
        if (schema && schema.type !== 'string') body.append(text('p', type), json(schema));
      });
    });
    var summary = el('summary', {}, [text('span', method, { class: 'method ' + method }), path + '  ', text('span', op.summary)]);
    if (scopes.length) summary.append(text('span', scopes.join(', '), { class: 'scope' }));
    return el('details', { id: op.operationId }, [summary, body]);
  }

  function render(spec) {
    document.getElementById('title').textContent = spec.info.title + ' ' + spec.info.version;
    document.getElementById('description').textContent = spec.info.description;
    var main = document.getElementById('api');
    main.textContent = '';
    (spec.tags || []).forEach(function (tag) {
      var section = el('section', {}, [text('h2', tag.name), text('p', tag.description)]);
      Object.keys(spec.paths).forEach(function (path) {
        Object.keys(spec.paths[path]).forEach(function (method) {
          var op = spec.paths[path][method];
          if (op.tags.indexOf(tag.name) !== -1) section.append(operation(method, path, op, (spec.components || {}).securitySchemes || {}));
        });
      });
      if (section.querySelector('details')) main.append(section);
    });
    main.append(text('h2', 'Problem types'));
    main.append(table(['code', 'status', 'meaning'], (spec['x-problem-types'] || []).map(function (p) { return [p.code, p.status.join(', '), p.meaning]; })));
    main.append(text('h2', 'Schemas'));
    Object.keys(spec.components.schemas).forEach(function (name) {
      main.append(el('details', { id: 'schema-' + name }, [text('summary', name), el('div', {}, [json(spec.components.schemas[name])])]));
    });
  }

  fetch('openapi.json').then(function (response) {
    if (!response.ok) throw new Error('openapi.json answered ' + response.status);
    return response.json();
  }).then(render, function (error) { document.getElementById('api').textContent = 'Cannot load openapi.json: ' + error.message; });
})();
</script>
</body>
</html>
`;

/** The CSP source for an inline element of the page: its content's sha256, as the browser hashes it. */
function inlineHash(tag: 'script' | 'style'): string {
  const content = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(DOCS_PAGE)![1]!;
  return `'sha256-${createHash('sha256').update(content).digest('base64')}'`;
}

/**
 * Headers that keep both API description routes from being framed (clickjacking), sniffed as
 * another type or leaking the URL they were opened from. Set on these two routes only, not by a
 * middleware: the decision path is benchmarked and has no page to protect.
 */
const COMMON_HEADERS = { 'X-Content-Type-Options': 'nosniff', 'X-Frame-Options': 'DENY', 'Referrer-Policy': 'no-referrer' };

/** /openapi.json is data: nothing in it may run or load anything. */
export const OPENAPI_HEADERS: Readonly<Record<string, string>> = {
  ...COMMON_HEADERS,
  'Content-Type': 'application/json',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
};

/**
 * /docs may run its own inline script and style (by hash, so an injected one would not) and
 * fetch openapi.json from its own origin; nothing else.
 */
export const DOCS_HEADERS: Readonly<Record<string, string>> = {
  ...COMMON_HEADERS,
  'Content-Security-Policy': [
    "default-src 'none'",
    `script-src ${inlineHash('script')}`,
    `style-src ${inlineHash('style')}`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
};
