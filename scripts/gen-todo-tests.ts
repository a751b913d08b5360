/**
 * Generates rego/todo/interop_test.rego from the AuthZEN interop suite's Todo decisions
 * (openid/authzen, interop/authzen-todo-backend/test/decisions-authorization-api-1_0-02.json):
 * one Rego test per single evaluation and one per batch, so `opa test rego/todo` proves the
 * policy gives the decisions the public harness expects.
 *
 *   node scripts/gen-todo-tests.ts <decisions.json>
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { opaPath } from '../src/toolchain/opa.ts';

const bundleDir = join(import.meta.dirname, '..', 'rego', 'todo');
const outputFile = join(bundleDir, 'interop_test.rego');

// Strict on purpose: a field this generator does not map (context, properties on
// subjects or actions) must fail loudly instead of silently dropping out of a test.
const subjectSchema = z.strictObject({ type: z.string(), id: z.string() });
const actionSchema = z.strictObject({ name: z.string() });
const resourceSchema = z.strictObject({
  type: z.string(),
  id: z.string(),
  properties: z.record(z.string(), z.string()).optional(),
});
const decisionsSchema = z.strictObject({
  evaluation: z.array(
    z.strictObject({
      request: z.strictObject({ subject: subjectSchema, action: actionSchema, resource: resourceSchema }),
      expected: z.boolean(),
    }),
  ),
  evaluations: z.array(
    z.strictObject({
      request: z.strictObject({
        subject: subjectSchema,
        action: actionSchema,
        evaluations: z.array(z.strictObject({ resource: resourceSchema })),
      }),
      expected: z.array(z.strictObject({ decision: z.boolean() })),
    }),
  ),
});
const directorySchema = z.object({
  todo: z.object({ users: z.record(z.string(), z.object({ name: z.string(), email: z.string() })) }),
});

type Subject = z.infer<typeof subjectSchema>;
type Resource = z.infer<typeof resourceSchema>;

const decisionsFile = process.argv[2];
if (!decisionsFile) {
  console.error('usage: node scripts/gen-todo-tests.ts <decisions-authorization-api-1_0-02.json>');
  process.exit(2);
}
const decisions = decisionsSchema.parse(JSON.parse(readFileSync(decisionsFile, 'utf8')));
const directory = directorySchema.parse(JSON.parse(readFileSync(join(bundleDir, 'data.json'), 'utf8')));

// Tests name subjects by first name (rick, morty, ...) instead of repeating opaque ids.
const subjectConstants = new Map<string, string>();
for (const [userId, user] of Object.entries(directory.todo.users)) {
  const firstName = user.name.split(' ')[0]!.toLowerCase();
  subjectConstants.set(opaqueSubjectId(userId), firstName);
}

/** The Dex-style id the scenario uses: base64 of protobuf {1: user id, 2: "local"}. */
function opaqueSubjectId(userId: string): string {
  const field = (tag: number, value: string) => [tag, value.length, ...Buffer.from(value, 'ascii')];
  return Buffer.from([...field(0x0a, userId), ...field(0x12, 'local')]).toString('base64');
}

function subjectName(subject: Subject): string {
  const name = subjectConstants.get(subject.id);
  if (subject.type !== 'user' || !name) throw new Error(`subject ${JSON.stringify(subject)} is not a user in data.json`);
  return name;
}

function subjectTerm(subject: Subject): string {
  return `{"type": "user", "id": ${subjectName(subject)}}`;
}

function resourceLabel(resource: Resource): string {
  const owner = resource.properties?.ownerID;
  if (owner) return `owned_by_${owner.split('@')[0]}`;
  return resource.id.split('@')[0]!;
}

function identifier(...parts: string[]): string {
  return parts.join('_').replace(/[^A-Za-z0-9_]/g, '_');
}

const pad = (n: number) => String(n).padStart(2, '0');

// Each test applies `with input as` itself: opa build -t wasm (1.22.2) fails type checking
// ("function used as reference, not called") on a function whose body uses `with`, even
// in a test file, and the bundle is built with its tests in it.
const singleTests = decisions.evaluation.map(({ request, expected }, i) => {
  const name = identifier('test_evaluation', pad(i + 1), subjectName(request.subject), request.action.name, resourceLabel(request.resource));
  const request_ = `authzen_input(${subjectTerm(request.subject)}, ${JSON.stringify(request.action)}, ${JSON.stringify(request.resource)})`;
  return `${name} if {\n\ttodo.decision.allow == ${expected} with input as ${request_}\n}`;
});

// A batch item overrides the request's subject, action and resource; these batches only vary the resource.
const batchTests = decisions.evaluations.map(({ request, expected }, i) => {
  const name = identifier('test_evaluations', pad(i + 1), subjectName(request.subject), request.action.name);
  const resources = request.evaluations.map((item) => JSON.stringify(item.resource)).join(',\n');
  return [
    `${name} if {`,
    `\tresults := [{"decision": decision} |`,
    `\t\tsome resource in [${resources}]`,
    `\t\tdecision := todo.decision.allow with input as authzen_input(${subjectTerm(request.subject)}, ${JSON.stringify(request.action)}, resource)`,
    `\t]`,
    `\tresults == ${JSON.stringify(expected)}`,
    `}`,
  ].join('\n');
});

const constants = [...subjectConstants].map(([id, name]) => `${name} := ${JSON.stringify(id)}`);

const source = `# METADATA
# title: AuthZEN Todo interop decisions
# description: |
#   Every single and batch evaluation of the AuthZEN interop suite's Todo
#   scenario, with the decision the public harness expects. Generated by
#   scripts/gen-todo-tests.ts from decisions-authorization-api-1_0-02.json:
#   edit the generator, not this file.
package todo.interop_test

import data.todo

${constants.join('\n')}

# The policy input Arbiter builds from an AuthZEN request with no access token.
authzen_input(subject, action, resource) := {
\t"subject": object.union(
\t\t{"authenticated": false, "asserted": true, "properties": {}, "scopes": [], "aud": [], "act": [], "claims": {}},
\t\tsubject,
\t),
\t"action": object.union({"properties": {}}, action),
\t"resource": object.union({"properties": {}}, resource),
\t"context": {"now": 1767225600, "request_id": "interop-test"},
}

${[...singleTests, ...batchTests].join('\n\n')}
`;

writeFileSync(outputFile, source);
execFileSync(opaPath(), ['fmt', '-w', outputFile], { stdio: 'inherit' });
console.log(`wrote ${singleTests.length} single and ${batchTests.length} batch tests to ${outputFile}`);
