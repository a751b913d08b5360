/**
 * Rows read with node:sqlite's readBigInts, their integers as numbers again. node:sqlite throws
 * a RangeError for an integer past 2^53 read as a number, and a file edited outside Arbiter can
 * hold one in any integer column: read as BigInts, it names the row instead of failing the read.
 */

export interface NumberRow {
  /** The row, integers as numbers: one past 2^53 is NaN (equal to nothing), but seq the nearest number, which still names the row. */
  row: Record<string, unknown>;
  /** The first column past 2^53, with its value as stored. */
  outOfRange?: { column: string; value: bigint };
}

export function withNumbers(row: Record<string, unknown>): NumberRow {
  const converted: Record<string, unknown> = {};
  let outOfRange: NumberRow['outOfRange'];
  for (const [column, value] of Object.entries(row)) {
    if (typeof value !== 'bigint') converted[column] = value;
    else if (value >= MIN_SAFE && value <= MAX_SAFE) converted[column] = Number(value);
    else {
      converted[column] = column === 'seq' ? Number(value) : Number.NaN;
      outOfRange ??= { column, value };
    }
  }
  return outOfRange ? { row: converted, outOfRange } : { row: converted };
}

const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
