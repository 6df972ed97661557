/** Where a command writes; injected so commands run in-process under test. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** One `forge-kernel <name>` subcommand. */
export interface Command {
  name: string;
  /** One line for the command list in `forge-kernel --help`. */
  summary: string;
  /** Full text for `forge-kernel <name> --help`. */
  help: string;
  /** Runs the command with the arguments after its name; resolves to the process exit code. */
  run(args: readonly string[], io: CliIO): Promise<number>;
}
