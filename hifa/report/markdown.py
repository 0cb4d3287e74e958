"""report.md: the page's tables and images as GitHub-flavoured Markdown (links relative to
the report folder, so it renders next to index.html)."""

from __future__ import annotations

from hifa.report.assets import Assets
from hifa.report.catalog import method_label, metric_for
from hifa.report.collect import Run, Suite
from hifa.report.figures import pick
from hifa.report.paired import paired_note, paired_rows
from hifa.report.provenance import provenance_note, provenance_rows, run_names
from hifa.report.run import mesh_label
from hifa.report.tables import Cell, Table, headline, prompt_note, prompt_table, summary_note, summary_table, table_keys


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_cell(cell: Cell, show_n: bool = False) -> str:
    text = cell.plain
    if cell.mean is not None and cell.best:
        text = f"**{text}**"
    if show_n and cell.n is not None and cell.mean is not None:
        text += f" (n={cell.n})"
    return md_escape(text)


def md_table(header: list[str], rows: list[list[str]], align_first_left: bool = True, left: int = 1) -> str:
    """A table whose first `left` columns align left (text), the others right (numbers)."""
    rule = [":--" if align_first_left and i < left else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def table_md(table: Table, show_n: bool = False) -> str:
    return md_table(["Method", *table.columns], [[md_escape(method_label(m)), *(md_cell(c, show_n) for c in cells)] for m, cells in table.rows])


def summary_md(table: Table) -> str:
    """Transposed: a row per metric, a column per method."""
    return md_table(["Metric", *(method_label(m) for m, _ in table.rows)],
                    [[md_escape(label), *(md_cell(cells[i], show_n=True) for _, cells in table.rows)] for i, label in enumerate(table.columns)])


def status_md(run: Run, seed: bool = False) -> str:
    """The run's badge with an icon; `seed` names the run's seed first."""
    text = {"complete": "✅ complete", "incomplete": "⚠️ " + run.badge, "failed": "❌ " + run.badge}[run.status]
    return f"seed {run.seed}: {text}" if seed else text


def seeds_status_md(suite: Suite, method: str, slug: str) -> str:
    """One status cell of a (method, prompt): its run's, or one line per seed."""
    return "<br>".join(md_escape(status_md(run, suite.multi_seed)) for run in suite.seed_runs(method, slug))


def run_images_md(run: Run, assets: Assets, views: int) -> str:
    """One line per view kind of thumbnails (the same files as the page), linked to the full size."""
    lines = []
    for kind in ("rgb", "textureless", "depth", "normal"):
        refs = []
        for path in pick(run.views.get(kind, []), views):
            ref = assets.thumbnail(path, f"{run.method}/{run.name}/{kind}_{path.stem}.png")
            if ref:
                refs.append(f"[![{run.method} {kind} {path.stem}]({ref})]({assets.link(path)})")
        if refs:
            lines.append(f"{kind}: " + " ".join(refs))
    if not lines and run.final_views is not None:
        ref = assets.thumbnail(run.final_views, f"{run.method}/{run.name}/final_views.png", 1024, 256)
        if ref:
            lines.append(f"final views: ![{run.method} final views]({ref})")
    if run.turntable is not None:
        ref = assets.copy(run.turntable, f"{run.method}/{run.name}/turntable{run.turntable.suffix}")
        if ref:
            lines.append(f"turntable: ![{run.method} turntable]({ref})" if ref.endswith(".gif") else f"turntable: [{ref}]({ref})")
    preview = assets.thumbnail(run.mesh_preview, f"{run.method}/{run.name}/mesh_preview.png", 1024, 256)
    if preview:
        lines.append(f"mesh preview: ![{run.method} mesh]({preview})")
    if run.meshes:
        lines.append("mesh: " + " · ".join(f"[{mesh_label(p)}]({assets.link(p)})" for p in run.meshes))
    return "<br>".join(lines) if lines else "_no images_"


def render_markdown(suite: Suite, assets: Assets, figures: dict[str, str], views: int = 4) -> str:
    counts = suite.counts()
    labels = [method_label(m) for m in suite.methods]
    out = [f"# {suite.name}: {' vs '.join(labels)}", ""] + ([suite.description, ""] if suite.description else [])
    out.append(f"{len(suite.methods)} methods × {len(suite.slugs)} prompts" + (f" × {len(suite.seeds)} seeds" if suite.multi_seed else "")
               + (f", world: {suite.world}" if suite.world else "")
               + f". Runs: {counts['complete']} complete, {counts['incomplete']} incomplete, {counts['failed']} failed."
               + " The page with the same content: [index.html](index.html).")
    out += ["", "## Runs", ""]
    statuses = [[md_escape(suite.prompts[s]), *(seeds_status_md(suite, m, s) for m in suite.methods)] for s in suite.slugs]
    out.append(md_table(["Prompt", *labels], statuses))
    keys = table_keys(suite, suite.methods)
    out += ["", "## Summary", ""]
    if keys:
        out.append(summary_note(suite) + " **Bold**: best per metric.")
        out += ["", summary_md(summary_table(suite, suite.methods, keys))]
    else:
        out.append("No metrics yet: no run has finished its evaluation.")
    if "metrics" in figures:
        out += ["", f"![metric bar charts]({figures['metrics']})"]
    if keys and (found := paired_rows(suite, suite.methods, headline(keys))) is not None:
        reference, columns, rows = found
        label = method_label(reference)
        out += ["", f"## Against {label}", "", paired_note(label, suite.multi_seed), ""]
        out.append(md_table(["Metric", *(f"{method_label(m)} − {label}" for m, _ in rows)],
                            [[md_escape(column), *(md_escape(cells[i]) for _, cells in rows)] for i, column in enumerate(columns)]))
    if keys:
        out += ["", "## Per prompt", "", prompt_note(suite), ""]
        for key in keys:
            metric = metric_for(key)
            out += [f"### {metric.label} {metric.arrow}".rstrip(), "", table_md(prompt_table(suite, key, suite.methods), suite.multi_seed), ""]
    out += ["", "## Qualitative comparison", ""]
    for slug in suite.slugs:
        out += [f"### “{suite.prompts[slug]}”", ""]
        rows = [[md_escape(method_label(m) + (f" · seed {run.seed}" if suite.multi_seed else "")), md_escape(status_md(run)),
                 run_images_md(run, assets, views)] for m in suite.methods for run in suite.seed_runs(m, slug)]
        out.append(md_table(["Method", "Status", "Images"], rows))
        out.append("")
    out += ["## Training curves", ""]
    out.append(f"![training curves]({figures['curves']})\n\nData: [curves.csv](curves.csv)" if "curves" in figures else "No training logs found.")
    if rows := provenance_rows(suite):
        out += ["", "## Provenance", "", provenance_note(suite, rows), ""]
        fields = [("not recorded (trained before hifa wrote environment.json)", "", "", "") if setting is None else
                  (setting.device, setting.software, setting.code, setting.checkpoints) for setting, _ in rows]
        out.append(md_table(["Device", "Libraries", "Code", "Checkpoints", "Runs"],
                            [[md_escape(x) for x in (*f, f"{len(runs)}: {run_names(runs)}")] for f, (_, runs) in zip(fields, rows)], left=5))
    if suite.notes or suite.problems:
        out += ["", "## Notes", ""]
        out += [f"- **{metric_for(k).label if k in suite.metric_keys else k}**: {md_escape(v)}" for k, v in sorted(suite.notes.items())]
        out += [f"- problem: {md_escape(p)}" for p in suite.problems]
    if suite.versions:
        out += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(suite.versions.items()))]
    return "\n".join(out) + "\n"
