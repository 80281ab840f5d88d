"""Generated parts of the documentation, run by mkdocs-gen-files at every `mkdocs build`.

Each page below holds a marker line `<!-- generated: NAME -->` that is replaced by text made from the code
or the stored results, so the page cannot drift from them:

- configuration.md, `configuration`: every Hydra config (src/robust_nic/conf) with its keys, defaults and
  comments, the settings dataclass of every typed config group (robust_nic.settings.SCHEMAS) and the options
  dataclass of every registered attack optimiser, defense and study;
- outputs.md, `metric-keys`: the metric keys of metrics.json from `robust_nic.evaluation.metric_keys.METRICS`;
- benchmarks.md, `benchmarks`: every file of bench/results, with its command, machine, version and date.

`python docs/gen_pages.py PAGE` prints one generated part (for a look without building the site).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, whichever robust_nic is installed

CONF = ROOT / "src" / "robust_nic" / "conf"
RESULTS = ROOT / "bench" / "results"
KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[\w.]+):(?:\s+(?P<value>[^#]*?))?\s*(?:#\s?(?P<comment>.*))?$")


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def prose(text) -> str:
    """A comment as Markdown text: brackets escaped (`[model=...]` is not a link)."""
    return cell(text).replace("[", "\\[").replace("]", "\\]").replace("<", "&lt;")


def yaml_keys(path: Path) -> tuple[str, list[tuple[str, str, str]]]:
    """(the file's leading comment, [(dotted key, default, description)]) of one Hydra YAML file, read line
    by line so that the comments come along. `defaults:` and `hydra:` are left out."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header, rows, stack, pending, skip_indent = [], [], [], [], None
    in_header = True
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#"):
            text = stripped.lstrip("#").strip()
            if text.startswith("@package"):
                continue
            if in_header:
                header.append(text)
            elif rows and line.startswith(" " * (len(line) - len(line.lstrip()))) and not pending and rows[-1][3] \
                    and len(line) - len(line.lstrip()) > rows[-1][4]:
                key, default, description, inline, indent = rows[-1]  # a continued inline comment
                rows[-1] = (key, default, f"{description} {text}", inline, indent)
            else:
                pending.append(text)
            continue
        if not stripped:
            in_header = False
            continue
        in_header = False
        match = KEY_LINE.match(line)
        if not match:  # a list item (defaults) or a flow value spanning lines
            pending = []
            continue
        indent = len(match["indent"])
        if skip_indent is not None:
            if indent > skip_indent:
                continue
            skip_indent = None
        key, value = match["key"], (match["value"] or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if indent == 0 and key in ("defaults", "hydra"):
            skip_indent, pending = indent, []
            continue
        description = "; ".join(part for part in (" ".join(pending), match["comment"] or "") if part)
        pending = []
        if value == "":  # a mapping: its keys follow
            stack.append((indent, key))
            continue
        dotted = ".".join([k for _, k in stack] + [key])
        rows.append((dotted, value, description, bool(match["comment"]), indent))
    return header_markdown(header), [(k, v, d) for k, v, d, _, _ in rows]


def header_markdown(lines: list[str]) -> str:
    """A file's leading comment as Markdown: command lines in a code block, the rest as text."""
    blocks: list[tuple[bool, list[str]]] = []
    for line in lines:
        is_command = line.startswith(("python ", "robust-nic ", "pip "))
        if blocks and blocks[-1][0] == is_command:
            blocks[-1][1].append(line)
        else:
            blocks.append((is_command, [line]))
    parts = ["```bash\n" + "\n".join(b) + "\n```" if command else prose(" ".join(b)) for command, b in blocks]
    return "\n\n".join(parts)


def keys_table(rows, prefix: str = "") -> list[str]:
    out = ["| key | default | meaning |", "| --- | --- | --- |"]
    out += [f"| `{prefix}{key}` | `{cell(default)}` | {prose(description)} |" for key, default, description in rows]
    return out


def type_name(hint) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or str(hint).replace("typing.", "")


def field_comments(cls: type) -> dict[str, str]:
    """A dataclass's field comments (`name: type = default  # comment`, and comment lines just above)."""
    comments = {}
    for base in reversed(cls.__mro__):  # inherited fields' comments too (RunSettings' seed, threads)
        if dataclasses.is_dataclass(base):
            comments |= own_field_comments(base)
    return comments


def own_field_comments(cls: type) -> dict[str, str]:
    comments, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"\s+(\w+): [^#]+?(?:#\s*(.*))?$", line)
        if match and not stripped.startswith(("def ", "return ")):
            comments[match[1]] = " ".join(filter(None, [*pending, match[2]]))
        pending = []
    return comments


def options_table(options: type | None, prefix: str, meanings: dict[str, str] | None = None) -> list[str]:
    from robust_nic.settings import dotted, plain

    if options is None:
        return ["No options of its own."]
    hints = typing.get_type_hints(options)
    out = ["| key | type | default |" + (" meaning |" if meanings else ""), "| --- | --- | --- |" + (" --- |" if meanings else "")]
    for field in dataclasses.fields(options):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
            default = plain(default) if dataclasses.is_dataclass(default) else default
        else:
            default = "(required)"
        meaning = f" {prose(meanings.get(field.name, ''))} |" if meanings else ""
        out.append(f"| `{dotted(prefix, field.name)}` | `{cell(type_name(hints.get(field.name)))}` | `{cell(default)}` |{meaning}")
    return out


def registry_section(title: str, registry, prefix: str) -> list[str]:
    out = [f"### {title}", ""]
    for name in registry.names():
        entry = registry.get(name)
        target = entry.target
        where = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
        out += [f"#### `{prefix}={name}`", "", f"Registered by `{where}`.", ""]
        out += options_table(entry.options, prefix) + [""]
    return out


def configuration() -> str:
    import importlib

    from robust_nic.attacks.optimizers import load_optimizers
    from robust_nic.codecs import architectures, qualities
    from robust_nic.defenses import DEFENSE_MODULES, DEFENSES
    from robust_nic.settings import SCHEMAS
    from robust_nic.studies import STUDIES, load_studies

    out = ["## Top-level settings", ""]
    for name in ("train", "evaluate", "paper"):
        path = CONF / f"{name}.yaml"
        if not path.exists():
            continue
        header, rows = yaml_keys(path)
        out += [f"### `{name}.yaml`", "", header, ""] + (keys_table(rows) if rows else []) + [""]
        if name != "paper":
            out += [f"Its top-level keys: *top level of `{name}.yaml`* under the typed settings below.", ""]
    out += ["## Typed settings of the config groups", "",
            "Each of these groups' keys, types and defaults are one dataclass of `robust_nic.settings` (stored "
            "in Hydra's ConfigStore as `schema/GROUP`, which the group's YAML files extend: they set only what "
            "differs). A key it does not declare, a value of another type or out of range is refused before any "
            "work, naming the key (exit status 2); `null` takes the default unless the type allows null.", ""]
    for group, cls in SCHEMAS.items():
        top = group.endswith("_run")  # the top level of train.yaml / evaluate.yaml: keys without a group
        title = f"top level of `{group.removesuffix('_run')}.yaml`" if top else f"`{group}`"
        out += [f"### {title}: `{cls.__name__}`", "", prose(" ".join((cls.__doc__ or "").split())), ""]
        out += options_table(cls, "" if top else group, field_comments(cls)) + [""]
    out += ["## Config groups", "", "Choose one option of a group with `GROUP=OPTION` (e.g. `attack=pgd`); set one key "
            "with `GROUP.KEY=VALUE`. Files marked *global* set keys anywhere in the config (their keys are "
            "shown in full).", ""]
    for group in sorted(p for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_")):
        out += [f"### `{group.name}`", ""]
        for path in sorted(group.glob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            is_global = "@package _global_" in text
            header, rows = yaml_keys(path)
            prefix = "" if is_global else f"{group.name}."
            out += [f"#### `{group.name}={path.stem}`" + (" *global*" if is_global else ""), ""]
            if header:
                out += [header, ""]
            out += (keys_table(rows, prefix) if rows else ["Sets no keys of its own."]) + [""]
    out += ["## Options of the registered extensions", "",
            "Each attack optimiser, defense and study declares its own keys as a dataclass; a key it does not "
            "declare is an error naming it, and a `null` key takes the default below.", ""]
    out += registry_section("Attack optimisers", load_optimizers(), "attack")
    for module in DEFENSE_MODULES:
        importlib.import_module(f"robust_nic.defenses.{module}")
    out += registry_section("Defenses", DEFENSES, "defense")
    load_studies()
    out += registry_section("Studies", STUDIES, "study")
    out += ["### Codecs", "", "| `model.arch` | qualities |", "| --- | --- |"]
    out += [f"| `{arch}` | {', '.join(map(str, qualities(arch)))} |" for arch in architectures()]
    return "\n".join(out) + "\n"


def metric_keys() -> str:
    from robust_nic.evaluation import metric_keys as keys

    doc = keys.__doc__
    scheme = doc[doc.index("Naming scheme") : doc.index("Tables, sweeps")].strip()
    title, *lines = scheme.splitlines()
    out = [f"### {title.rstrip(':')}", *lines, ""]
    out += ["| metric | label | keys in metrics.json | better | digits shown |", "| --- | --- | --- | --- | --- |"]
    for metric in (*keys.METRICS, *keys.RECORDED):
        kinds = ([keys.CLEAN] if metric.clean else []) + (list(keys.ATTACK_KINDS) if metric.attacked else [])
        names = ", ".join(f"`{keys.key(kind, metric.name)}`" for kind in kinds)
        better = "higher" if metric.higher_is_better else "lower"
        out.append(f"| `{metric.name}` | {cell(metric.label)} | {names} | {better} | {metric.digits} |")
    out += ["", "Renamed (an earlier version's name, read as today's from old run directories):", ""]
    out += ["| earlier name | name |", "| --- | --- |"]
    out += [f"| `{old}` | `{new}` |" for old, new in keys.RENAMED.items()]
    return "\n".join(out) + "\n"


def benchmark_files() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


REQUIRED = ("benchmark", "device", "title", "command", "machine", "version", "date", "tables")


def column(table: dict, name: str) -> int:
    return table["columns"].index(name)


def ratios(table: dict, value: str, *labels: str) -> str:
    """'1.02 (tiny, 1 thread), ...': one column of a table, labelled by other columns."""
    parts = []
    for row in table["rows"]:
        label = ", ".join(f"{row[column(table, c)]} thread{'s' if row[column(table, c)] != 1 else ''}" if c == "threads"
                          else str(row[column(table, c)]) for c in labels)
        parts.append(f"{row[column(table, value)]} ({label})")
    return "; ".join(parts)


def only(table: dict, **where) -> dict:
    rows = [r for r in table["rows"] if all(r[column(table, k.replace('_', ' '))] == v for k, v in where.items())]
    return {"columns": table["columns"], "rows": rows}


# The targets the code is held to, each read from one stored result: (target, goal, file, value from its tables).
TARGETS = [
    ("train.py batch / the same step as CompressAI's examples/train.py", "<= 1.10", "train_step_cpu.json",
     lambda d: ratios(only(d["tables"][0], measured="step"), "ratio", "model", "threads")),
    ("attack step / one forward+backward pass of its proxy", "<= 1.10", "attack_step_cpu.json",
     lambda d: "chen2023: " + ratios(d["tables"][0], "chen2023 s/step / floor", "threads") + "; pgd: "
     + ratios(d["tables"][0], "pgd s/step / floor", "threads")),
    ("clean coding and metrics / compressai.utils.eval_model", "<= 1.05, equal bpp and reconstructions",
     "coding_vs_compressai_cpu.json", lambda d: ratios(d["tables"][0], "seconds ours / eval_model", "arch", "threads")),
    ("fast adversarial finetuning batch / plain RD batch", "<= 1.5", "finetune_fast_cpu.json",
     lambda d: ratios(only(d["tables"][0], recipe="fast@0.4"), "s/batch / plain", "codec")),
]


def targets(entries: dict[str, dict]) -> list[str]:
    out = ["| target | goal | measured | file |", "| --- | --- | --- | --- |"]
    for target, goal, name, value in TARGETS:
        if name in entries:
            anchor = name[:-5].replace("_", "-")
            out.append(f"| {prose(target)} | {prose(goal)} | {cell(value(entries[name]))} | [`{name}`](#{anchor}) |")
    return out + [""]


def benchmarks() -> str:
    out = ["| file | benchmark | device | version | date |", "| --- | --- | --- | --- | --- |"]
    entries = []
    for path in benchmark_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{path}: missing {missing}")
        entries.append((path, data))
        anchor = path.stem.replace("_", "-")
        out.append(f"| [`{path.name}`](#{anchor}) | {cell(data['title'])} | {cell(data['device'])} | "
                   f"{data['version']} | {data['date']} |")
    out = ["## Targets", ""] + targets({p.name: d for p, d in entries}) + ["## Every result", ""] + out + [""]
    for path, data in entries:
        anchor = path.stem.replace("_", "-")
        out += [f"## {data['title']} ({data['device']}) {{#{anchor}}}", ""]
        out += [f"File `bench/results/{path.name}` · robust-nic {data['version']} · {data['date']} · "
                f"{cell(data['machine'])}", ""]
        commands = data["command"] if isinstance(data["command"], list) else [data["command"]]
        out += ["```bash"] + commands + ["```", ""]
        if data.get("description"):
            out += [data["description"], ""]
        for table in data["tables"]:
            if table.get("caption"):
                out += [f"*{table['caption']}*", ""]
            out += ["| " + " | ".join(cell(c) for c in table["columns"]) + " |",
                    "| " + " | ".join("---" for _ in table["columns"]) + " |"]
            out += ["| " + " | ".join("-" if v is None else cell(v) for v in row) + " |" for row in table["rows"]]
            out.append("")
    return "\n".join(out) + "\n"


GENERATORS = {"configuration.md": ("configuration", configuration), "outputs.md": ("metric-keys", metric_keys),
              "benchmarks.md": ("benchmarks", benchmarks)}


def render(page: str, text: str) -> str:
    marker, make = GENERATORS[page]
    line = f"<!-- generated: {marker} -->"
    if line not in text:
        raise ValueError(f"docs/{page} lacks the line {line}")
    return text.replace(line, make())


def main() -> None:
    import mkdocs_gen_files

    for page in GENERATORS:
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        with mkdocs_gen_files.open(page, "w") as f:
            f.write(render(page, text))


if __name__ == "__main__" and len(sys.argv) > 1:
    print(GENERATORS[sys.argv[1]][1]())
elif __name__ in ("__main__", "<run_path>") or "mkdocs_gen_files" in sys.modules:
    main()
