// A no-op overlay for call-overhead benchmarks: returns its input untouched.
export function run(input: string): string {
  return input;
}
