import { ACTOR_KINDS, type ActorKind } from '../inspect/catalog.ts';
import { MACHINES, statechart, toDot, toMermaid } from '../inspect/statechart.ts';
import { parseCommandArgs, reportFailure, UsageError, type CliIO, type Command } from './command.ts';

const HELP = `Usage: forge-kernel viz <overlay|breaker|pipeline|cascade> [--format mermaid|dot|json]

Prints one of the kernel's state machines, for documentation or Stately Studio:
  mermaid  a stateDiagram-v2, pasteable into Markdown (the default)
  dot      a Graphviz digraph (dot -Tsvg to draw it)
  json     XState's machine.toJSON()

Options:
  --format <f>   mermaid, dot or json
  --json         with a usage mistake: print { ok: false, error } (the diagram itself is the output otherwise)
  -h, --help     show this help

Exit status: 0, or 2 on a usage mistake.`;

function parse(args: readonly string[]): { kind: ActorKind; format: 'mermaid' | 'dot' | 'json' } {
  const parsed = parseCommandArgs({ args: [...args], allowPositionals: true, options: { format: { type: 'string', default: 'mermaid' }, json: { type: 'boolean' } } });
  const [kind, ...extra] = parsed.positionals;
  if (kind === undefined || !(ACTOR_KINDS as readonly string[]).includes(kind)) throw new UsageError(`viz needs a machine: one of ${ACTOR_KINDS.join(', ')}${kind === undefined ? '' : `, got ${JSON.stringify(kind)}`}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  const format = parsed.values.format;
  if (format !== 'mermaid' && format !== 'dot' && format !== 'json') throw new UsageError(`--format must be mermaid, dot or json, got ${JSON.stringify(format)}`);
  return { kind: kind as ActorKind, format };
}

function run(args: readonly string[], io: CliIO): Promise<number> {
  try {
    const { kind, format } = parse(args);
    const machine = MACHINES[kind];
    if (format === 'json') io.stdout(`${JSON.stringify(machine.toJSON(), null, 2)}\n`);
    else io.stdout(format === 'mermaid' ? toMermaid(statechart(machine)) : toDot(statechart(machine)));
    return Promise.resolve(0);
  } catch (error) {
    return Promise.resolve(reportFailure(io, 'viz', args.includes('--json'), error));
  }
}

export const vizCommand: Command = { name: 'viz', summary: 'print a kernel state machine as Mermaid, Graphviz DOT or JSON', help: HELP, run };
