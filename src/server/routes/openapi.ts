import { Hono } from 'hono';
import { DOCS_HEADERS, DOCS_PAGE, OPENAPI_HEADERS } from '../openapi/docs-page.ts';
import type { OpenApiDocument } from '../openapi/document.ts';

/** The API description: /openapi.json for tools, /docs for people. Both are built once, at start. */
export function openApiRoutes(document: OpenApiDocument) {
  const body = JSON.stringify(document);
  return new Hono()
    .get('/openapi.json', (c) => c.body(body, 200, OPENAPI_HEADERS))
    .get('/docs', (c) => c.html(DOCS_PAGE, 200, DOCS_HEADERS));
}
