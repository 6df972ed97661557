// A no-op pipeline overlay for the pipeline benchmark: succeeds with no data, whatever the run holds.
export function run(input: string): string {
  return input.length >= 0 ? '{"ok":true}' : "";
}
