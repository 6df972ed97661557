/** The `code` of the error a promise (or a function) fails with; undefined when it succeeds. */
export async function codeOf(attempt: Promise<unknown> | (() => unknown)): Promise<string | undefined> {
  try {
    await (typeof attempt === 'function' ? attempt() : attempt);
  } catch (error) {
    return (error as { code?: string }).code ?? `untyped: ${String(error)}`;
  }
  return undefined;
}
