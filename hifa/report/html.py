"""The comparison page: one HTML file (inline CSS, no scripts) that opens from its folder;
media are thumbnails in assets/ beside it, meshes and full-size images are relative links."""

from __future__ import annotations

from html import escape

from hifa.report.assets import Assets
from hifa.report.catalog import method_label, metric_for
from hifa.report.collect import Run, Suite
from hifa.report.figures import pick
from hifa.report.paired import paired_note, paired_rows, reference_of
from hifa.report.provenance import provenance_note, provenance_rows, run_names
from hifa.report.run import mesh_label
from hifa.report.tables import Cell, Table, headline, prompt_note, prompt_table, summary_note, summary_table, table_keys

CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --card:#fff; --ok:#127a3e; --warn:#8a5a00; --fail:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color:var(--fg); background:var(--bg); }
header { background:#1d2330; color:#fff; padding:22px 32px 18px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; }
header .sub { color:#c8cedb; }
header .counts span { margin-right:10px; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); padding:8px 32px; }
nav a { margin-right:18px; color:#3d5a99; text-decoration:none; font-weight:600; }
main { max-width:1400px; margin:0 auto; padding:8px 28px 40px; }
h2 { font-size:19px; margin:30px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:22px 0 8px; }
p.note { color:var(--muted); margin:4px 0 10px; font-size:12.5px; }
table { border-collapse:collapse; background:var(--card); border:1px solid var(--line); margin:6px 0 14px; font-variant-numeric:tabular-nums; }
th, td { padding:6px 12px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:#eef1f6; font-weight:600; font-size:12.5px; white-space:normal; max-width:190px; vertical-align:bottom; }
th:first-child, td:first-child { text-align:left; }
tbody tr:nth-child(even) td { background:#fafbfc; }
td.best { font-weight:700; }
td.fail { color:var(--fail); font-style:italic; }
td.miss { color:var(--muted); font-style:italic; }
table.status td { text-align:center; }
table.status th { text-align:center; }
table.status td:first-child, table.status th:first-child { text-align:left; }
table.summary td { min-width:150px; }
td .se { color:var(--muted); font-size:12px; }
td .n { color:var(--muted); font-size:11px; }
.tables { display:flex; flex-wrap:wrap; gap:0 22px; }
.tables > div { max-width:100%; overflow-x:auto; }
.tables > div h4 { margin:10px 0 0; font-size:13px; }
.badge { display:inline-block; padding:1px 9px; border-radius:10px; font-size:12px; font-weight:600; white-space:nowrap; }
.badge.complete { background:#dff5e6; color:var(--ok); }
.badge.incomplete { background:#fff1cc; color:var(--warn); }
.badge.failed { background:#fde3e1; color:var(--fail); }
.compare { display:grid; grid-template-columns:repeat(var(--cols), minmax(420px, 1fr)); gap:16px; overflow-x:auto; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; min-width:0; }
.card.failed { border-color:#f4b4ae; }
.card.incomplete { border-color:#f3d27a; }
.card h4 { margin:0 0 8px; font-size:15px; display:flex; justify-content:space-between; align-items:center; gap:8px; }
.row { display:flex; align-items:center; gap:6px; margin:4px 0; }
.row .label { width:78px; flex:none; color:var(--muted); font-size:12px; }
.row .imgs { display:flex; gap:4px; flex:1; min-width:0; }
.row .imgs a { flex:1; min-width:0; }
.row img { width:100%; aspect-ratio:1; object-fit:contain; background:#fff; border:1px solid var(--line); border-radius:4px; display:block; }
.media { display:flex; gap:10px; margin-top:8px; }
.media figure { margin:0; flex:0 1 150px; text-align:center; min-width:0; }
.media figure.wide { flex:1 1 auto; }
.media img, .media video { width:100%; border:1px solid var(--line); border-radius:4px; background:#fff; }
.media figure.wide img { width:auto; max-width:100%; max-height:150px; }
figcaption { color:var(--muted); font-size:12px; }
.links { margin-top:8px; font-size:12.5px; }
.links a { margin-right:10px; color:#3d5a99; }
.empty { display:flex; align-items:center; justify-content:center; height:150px; border-radius:6px; color:var(--muted);
  font-weight:600; background:repeating-linear-gradient(45deg,#f3f4f6,#f3f4f6 10px,#eceef1 10px,#eceef1 20px); }
h3 .slug { color:var(--muted); font-weight:400; font-size:12px; }
.metrics { font-size:12.5px; color:var(--fg); margin-top:8px; display:grid; grid-template-columns:repeat(2, 1fr); gap:0 14px; }
.metrics span { color:var(--muted); }
details { margin-top:8px; font-size:12.5px; }
details img { max-width:100%; border:1px solid var(--line); margin-top:4px; }
img.figure { max-width:100%; background:#fff; border:1px solid var(--line); border-radius:6px; }
footer { color:var(--muted); font-size:12px; margin-top:30px; }
"""

ROW_LABELS = {"rgb": "RGB", "textureless": "Textureless", "depth": "Depth", "normal": "Normals"}


def badge(run: Run) -> str:
    short = run.badge
    return f'<span class="badge {run.status}" title="{escape(run.badge)}">{escape(short)}</span>'


def cell_html(cell: Cell, show_n: bool = False) -> str:
    if cell.mean is None:
        css = {"failed": "fail", "missing": "miss"}.get(cell.note or "", "miss")
        return f'<td class="{css}">{escape(cell.note or cell.text)}</td>'
    se = f' <span class="se">± {escape(cell.se_text)}</span>' if cell.se_text else ""
    n = f' <span class="n">(n={cell.n})</span>' if show_n and cell.n is not None else ""
    css = ' class="best"' if cell.best else ""
    return f"<td{css}>{escape(cell.text)}{se}{n}</td>"


def table_html(table: Table, first: str = "Method", show_n: bool = False) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in [first, *table.columns])
    body = "".join(f"<tr><td>{escape(method_label(m))}</td>{''.join(cell_html(c, show_n) for c in cells)}</tr>" for m, cells in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_html(table: Table) -> str:
    """The summary transposed: a row per metric, a column per method (methods side by side)."""
    head = "".join(f"<th>{escape(method_label(m))}</th>" for m, _ in table.rows)
    body = "".join(f"<tr><td>{escape(label)}</td>{''.join(cell_html(cells[i], show_n=True) for _, cells in table.rows)}</tr>"
                   for i, label in enumerate(table.columns))
    return f'<table class="summary"><thead><tr><th>Metric</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def paired_html(suite: Suite, keys: list[str]) -> str:
    """'Against HiFA': a row per metric, a column per other method (paired differences), or ''."""
    found = paired_rows(suite, suite.methods, keys)
    if found is None:
        return ""
    reference, columns, rows = found
    label = method_label(reference)
    head = "".join(f"<th>{escape(method_label(m))} − {escape(label)}</th>" for m, _ in rows)
    body = "".join(f"<tr><td>{escape(column)}</td>{''.join(f'<td>{escape(cells[i])}</td>' for _, cells in rows)}</tr>"
                   for i, column in enumerate(columns))
    return (f'<h2 id="paired">Against {escape(label)}</h2><p class="note">{escape(paired_note(label, suite.multi_seed))}</p>'
            f'<table class="summary"><thead><tr><th>Metric</th>{head}</tr></thead><tbody>{body}</tbody></table>')


def status_table(suite: Suite) -> str:
    head = "".join(f"<th>{escape(method_label(m))}</th>" for m in suite.methods)
    def cell(m: str, s: str) -> str:
        return "<br>".join((f"seed {run.seed}: " if suite.multi_seed else "") + badge(run) for run in suite.seed_runs(m, s))

    rows = "".join(f"<tr><td>{escape(suite.prompts[s])}</td>{''.join(f'<td>{cell(m, s)}</td>' for m in suite.methods)}</tr>"
                   for s in suite.slugs)
    return f'<table class="status"><thead><tr><th>Prompt</th>{head}</tr></thead><tbody>{rows}</tbody></table>'


def run_card(run: Run, assets: Assets, views: int, order: list[str], show_seed: bool = False) -> str:
    base = f"{run.method}/{run.name}"
    title = method_label(run.method) + (f" · seed {run.seed}" if show_seed else "")
    parts = [f'<div class="card {run.status}"><h4><span>{escape(title)}</span>{badge(run)}</h4>']
    indices = pick(list(range(len(run.views.get("rgb", [])))), views)
    rows = 0
    for kind, label in ROW_LABELS.items():
        paths = run.views.get(kind, [])
        chosen = [paths[i] for i in indices if i < len(paths)] or pick(paths, views)
        imgs = []
        for path in chosen:
            ref = assets.thumbnail(path, f"{base}/{kind}_{path.stem}.png")
            if ref:
                alt = escape(f"{run.method} {run.name} {kind} {path.stem}")
                imgs.append(f'<a href="{escape(assets.link(path))}"><img src="{escape(ref)}" alt="{alt}" loading="lazy"></a>')
        if imgs:
            rows += 1
            parts.append(f'<div class="row"><div class="label">{label}</div><div class="imgs">{"".join(imgs)}</div></div>')
    if not rows:
        fallback = assets.thumbnail(run.final_views, f"{base}/final_views.png", 1024, 256)
        if fallback:
            parts.append('<p class="note">no render step; final training views:</p>'
                         f'<img src="{escape(fallback)}" alt="final views" style="max-width:100%">')
        else:
            parts.append(f'<div class="empty">{"failed" if run.failed else "no images"}</div>')
    media = []
    if run.turntable is not None:
        ref = assets.copy(run.turntable, f"{base}/turntable{run.turntable.suffix}")
        if ref and run.turntable.suffix == ".mp4":
            first = run.views.get("rgb", [])[:1]
            poster = assets.thumbnail(first[0], f"{base}/rgb_{first[0].stem}.png") if first else None
            poster_attr = f' poster="{escape(poster)}"' if poster else ""
            media.append(f'<figure><video src="{escape(ref)}"{poster_attr} autoplay loop muted playsinline></video>'
                         '<figcaption>turntable</figcaption></figure>')
        elif ref:
            media.append(f'<figure><img src="{escape(ref)}" alt="turntable"><figcaption>turntable</figcaption></figure>')
    if run.mesh_preview is not None:
        ref = assets.thumbnail(run.mesh_preview, f"{base}/mesh_preview.png", 1024, 256)
        if ref:
            media.append(f'<figure class="wide"><a href="{escape(assets.link(run.mesh_preview))}"><img src="{escape(ref)}" alt="mesh preview">'
                         '</a><figcaption>mesh (shaded preview)</figcaption></figure>')
    if media:
        parts.append(f'<div class="media">{"".join(media)}</div>')
    if run.metrics:
        items = "".join(f"<div><span>{escape(metric_for(k).label)}:</span> {escape(metric_for(k).fmt(run.metrics[k].mean))}</div>"
                        for k in order if k in run.metrics)
        parts.append(f'<div class="metrics">{items}</div>')
        if run.failed:
            parts.append('<p class="note">failed run: its values are left out of the means.</p>')
    links = [f'<a href="{escape(assets.link(p))}">{escape(mesh_label(p))}</a>' for p in run.meshes]
    if run.contact_sheet is not None:
        links.append(f'<a href="{escape(assets.link(run.contact_sheet))}">contact sheet</a>')
    if run.path.is_dir():
        links.append(f'<a href="{escape(assets.link(run.path))}/">run folder</a>')
    parts.append(f'<div class="links">{"mesh: " if run.meshes else ""}{" ".join(links)}</div>')
    extra = []
    if run.validation:
        for path in pick(run.validation, 3):
            ref = assets.thumbnail(path, f"{base}/validation_{path.stem}.png", 1024, 160)
            if ref:
                extra.append(f'<div>{escape(path.stem.replace("_", " "))}</div><img src="{escape(ref)}" alt="validation {escape(path.stem)}">')
    opacity = [assets.thumbnail(p, f"{base}/opacity_{p.stem}.png", 128, 128) for p in pick(run.views.get("opacity", []), views)]
    if any(opacity):
        extra.append("<div>opacity</div>" + "".join(f'<img src="{escape(r)}" alt="opacity" style="width:23%">' for r in opacity if r))
    if run.problems:
        extra.append("<div>problems: " + escape("; ".join(run.problems)) + "</div>")
    if extra:
        parts.append(f"<details><summary>training progress and more</summary>{''.join(extra)}</details>")
    parts.append("</div>")
    return "".join(parts)


def provenance_html(suite: Suite) -> str:
    """The provenance section: a row per setting (device, libraries, code, checkpoints) with its runs."""
    rows = provenance_rows(suite)
    if not rows:
        return '<h2 id="provenance">Provenance</h2><p class="note">No run has trained yet.</p>'
    cells = []
    for setting, runs in rows:
        fields = ("not recorded (trained before hifa wrote environment.json)", "", "", "") if setting is None else \
            (setting.device, setting.software, setting.code, setting.checkpoints)
        cells.append("<tr>" + "".join(f"<td>{escape(f)}</td>" for f in fields)
                     + f'<td style="white-space:normal;text-align:left">{len(runs)}: {escape(run_names(runs))}</td></tr>')
    return (f'<h2 id="provenance">Provenance</h2><p class="note">{escape(provenance_note(suite, rows))}</p>'
            '<table class="provenance"><thead><tr><th>Device</th><th>Libraries</th><th>Code</th><th>Checkpoints</th><th>Runs</th></tr></thead>'
            f"<tbody>{''.join(cells)}</tbody></table>")


def prompt_block(suite: Suite, key: str) -> str:
    metric = metric_for(key)
    table = table_html(prompt_table(suite, key, suite.methods), show_n=suite.multi_seed)  # with seeds: how many each prompt has
    return f"<div><h4>{escape(metric.label)} {metric.arrow}</h4>{table}</div>"


def render_page(suite: Suite, assets: Assets, figures: dict[str, str], views: int = 4) -> str:
    """The page's HTML; `figures` maps 'metrics' and 'curves' to their relative paths."""
    counts = suite.counts()
    labels = [method_label(m) for m in suite.methods]
    title = f"{suite.name}: {' vs '.join(labels[:3])}{' and more' if len(labels) > 3 else ''}"
    keys = table_keys(suite, suite.methods)
    paired = paired_html(suite, headline(keys)) if keys else ""
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
           f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>',
           f"<header><h1>{escape(title)}</h1><div class=\"sub\">{len(suite.methods)} methods × {len(suite.slugs)} prompts"
           f"{f' × {len(suite.seeds)} seeds' if suite.multi_seed else ''}"
           f"{' · world: ' + escape(str(suite.world)) if suite.world else ''} · <span class=\"counts\">{counts['complete']} complete, "
           f"{counts['incomplete']} incomplete, {counts['failed']} failed</span></div>"
           + (f'<div class="sub">{escape(suite.description)}</div>' if suite.description else "") + "</header>",
           '<nav><a href="#runs">Runs</a><a href="#summary">Summary</a>'
           + (f'<a href="#paired">Against {escape(method_label(reference_of(suite, suite.methods)))}</a>' if paired else "")
           + '<a href="#per-prompt">Per prompt</a>'
           '<a href="#qualitative">Qualitative</a><a href="#curves">Training curves</a><a href="#provenance">Provenance</a>'
           '<a href="#notes">Notes</a></nav><main>']
    out.append('<h2 id="runs">Runs</h2>' + status_table(suite))
    out.append('<h2 id="summary">Summary</h2>')
    if keys:
        out.append(f'<p class="note">{escape(summary_note(suite))} Bold: best per metric. ↑ higher is better, ↓ lower is better.</p>')
        out.append(summary_html(summary_table(suite, suite.methods, keys)))
    else:
        out.append('<p class="note">No metrics yet: no run has finished its evaluation.</p>')
    if "metrics" in figures:
        out.append(f'<img class="figure" src="{escape(figures["metrics"])}" alt="metric bar charts">')
    out.append(paired)
    if keys:
        out.append(f'<h2 id="per-prompt">Per prompt</h2><p class="note">{escape(prompt_note(suite))}</p><div class="tables">')
        main_keys = headline(keys)
        for key in main_keys:
            out.append(prompt_block(suite, key))
        out.append("</div>")
        others = [k for k in keys if k not in main_keys]
        if others:
            blocks = "".join(prompt_block(suite, k) for k in others)
            out.append(f'<details><summary>{len(others)} more metrics</summary><div class="tables">{blocks}</div></details>')
    out.append('<h2 id="qualitative">Qualitative comparison</h2>')
    for slug in suite.slugs:
        out.append(f'<h3>“{escape(suite.prompts[slug])}” <span class="slug">{escape(slug)}</span></h3>')
        cards = [run_card(run, assets, views, headline(suite.metric_keys), suite.multi_seed) for m in suite.methods for run in suite.seed_runs(m, slug)]
        columns = min(len(suite.seeds), 4) if suite.multi_seed else min(len(suite.methods), 3)  # with seeds: a row per method
        out.append(f'<div class="compare" style="--cols:{columns}">')
        out.extend(cards)
        out.append("</div>")
    out.append('<h2 id="curves">Training curves</h2>')
    if "curves" in figures:
        out.append(f'<img class="figure" src="{escape(figures["curves"])}" alt="training curves">'
                   '<p class="note">Light: logged values; bold: moving average. Data: <a href="curves.csv">curves.csv</a>.</p>')
    else:
        out.append('<p class="note">No training logs found.</p>')
    out.append(provenance_html(suite))
    out.append('<h2 id="notes">Notes</h2><ul>')
    for key, note in sorted(suite.notes.items()):
        out.append(f"<li><b>{escape(metric_for(key).label if '/' in key or key in suite.metric_keys else key)}</b>: {escape(note)}</li>")
    problems = suite.problems + [f"{r.method}/{r.name}: {p}" for r in suite.runs.values() for p in r.problems] + assets.failures
    out.extend(f"<li>problem: {escape(p)}</li>" for p in problems)
    out.append("</ul>")
    if suite.versions:
        out.append("<footer>versions: " + escape(", ".join(f"{k} {v}" for k, v in sorted(suite.versions.items()))) + "</footer>")
    out.append('<footer>Generated by <code>hifa report</code> from the run folders alone; also: <a href="report.md">report.md</a>, '
               '<a href="../paper/">paper tables and figures</a>, <a href="../metrics.json">metrics.json</a>, <a href="runs.json">runs.json</a>.</footer></main></body></html>\n')
    return "\n".join(out)
