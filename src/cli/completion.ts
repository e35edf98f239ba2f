import type { CAC } from "cac";

/** Shell completion scripts generated from the command table, so they never drift from it. */
export function completionScript(cli: CAC, shell: string): string {
  const words = cli.commands.map((c) => c.name).filter((n) => n && n !== "daemon run");
  const top = [...new Set(words.map((w) => w.split(" ")[0]!))].sort();
  const subs = new Map<string, string[]>();
  for (const w of words) {
    const parts = w.split(" ");
    if (parts.length > 1) subs.set(parts[0]!, [...(subs.get(parts[0]!) ?? []), parts[1]!]);
  }
  if (shell === "bash") {
    const cases = [...subs].map(([g, s]) => `    ${g}) COMPREPLY=( $(compgen -W "${[...new Set(s)].join(" ")}" -- "$cur") ) ;;`).join("\n");
    return `# banger bash completion: eval "$(banger completion bash)"
_banger() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  if [ "$COMP_CWORD" -eq 1 ]; then COMPREPLY=( $(compgen -W "${top.join(" ")}" -- "$cur") ); return; fi
  if [ "$COMP_CWORD" -eq 2 ]; then
  case "\${COMP_WORDS[1]}" in
${cases}
  esac
  fi
}
complete -F _banger banger
`;
  }
  if (shell === "zsh") {
    const cases = [...subs].map(([g, s]) => `    ${g}) compadd ${[...new Set(s)].join(" ")} ;;`).join("\n");
    return `#compdef banger
# banger zsh completion: banger completion zsh > "\${fpath[1]}/_banger"
_banger() {
  if (( CURRENT == 2 )); then compadd ${top.join(" ")}; return; fi
  if (( CURRENT == 3 )); then
  case "\${words[2]}" in
${cases}
  esac
  fi
}
compdef _banger banger
`;
  }
  if (shell === "fish") {
    const lines = [`# banger fish completion: banger completion fish > ~/.config/fish/completions/banger.fish`, `complete -c banger -f`];
    lines.push(`complete -c banger -n "__fish_use_subcommand" -a "${top.join(" ")}"`);
    for (const [g, s] of subs) lines.push(`complete -c banger -n "__fish_seen_subcommand_from ${g}" -a "${[...new Set(s)].join(" ")}"`);
    return `${lines.join("\n")}\n`;
  }
  throw new Error(`unknown shell ${shell}`);
}
