// SQL text shared by the stores.

/** `INSERT [OR REPLACE] INTO <table> (a, b) VALUES ($a, $b)` for the given columns, bound by name. */
export function insertSql(table: string, columns: readonly string[], replace = false): string {
  return `INSERT ${replace ? "OR REPLACE " : ""}INTO ${table} (${columns.join(", ")}) VALUES (${columns.map((c) => `$${c}`).join(", ")})`;
}
