import { Worker } from 'node:worker_threads';

/**
 * What SQLite's integrity check finds wrong with the decisions table and its indexes, and
 * with reason_set_codes (an empty list when nothing), checked on a thread of its own. The
 * chain walk reads rows; queries, and lookups by decision_id, read the indexes, which SQLite
 * trusts: an index rebuilt without a record's entry hides that record from a filtered query
 * while every row still chains, and reason codes stored out of order mislead a reason filter
 * while a scan of them finds each. An error (the file cannot be read at all) rejects.
 */
export function decisionIndexProblems(path: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./integrity-worker.ts', import.meta.url), { workerData: { path } });
    let answer: string[] | undefined;
    worker.once('message', (messages: string[]) => {
      answer = messages.filter((message) => message !== 'ok');
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (answer !== undefined) resolve(answer);
      else reject(new Error(`the decision log integrity check stopped (exit code ${code}) without an answer`));
    });
  });
}

/** The rowid (the decision's seq) an integrity check message names, e.g. "row 4 missing from index decisions_by_sub". */
export function problemSeq(message: string): number | undefined {
  const match = /\brow (\d+)\b/.exec(message);
  return match ? Number(match[1]) : undefined;
}
