"""A study's report: leaderboard (Markdown, CSV), plots and one self-contained HTML page.

Read back from the study workdir alone: Optuna's database for each trial's parameters and
state, each run's ``metrics.jsonl`` and ``summary.json`` for its numbers, and its best
checkpoint for its size. One row per point (trial), averaged over its seeds.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import pathlib
import statistics
from typing import Any

import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from flaxcnn.studies.runner import (
    read_metrics,
    read_summary,
    storage_url,
    trial_dir,
    write_atomic,
)
from flaxcnn.studies.spec import StudyError

BEST = '#d62728'
STATES = {'COMPLETE': 'complete', 'PRUNED': 'pruned', 'FAIL': 'failed', 'RUNNING': 'running'}
MEASURES = (  # leaderboard column -> what it is (mean ± std over a point's seeds)
    ('best_valid_accuracy', 'best valid acc'),
    ('best_epoch', 'at epoch'),
    ('best_seconds', 'at s'),
    ('seconds_to_90pct', 's to 90%'),
    ('seconds_to_95pct', 's to 95%'),
    ('test_accuracy', 'test acc'),
    ('params', 'params'),
    ('checkpoint_mb', 'ckpt MB'),
    ('images_per_second', 'img/s'),
)
PERCENT = ('best_valid_accuracy', 'test_accuracy')


def run_numbers(run: pathlib.Path) -> dict[str, Any] | None:
    """One run's leaderboard numbers from its workdir, or None before its first epoch."""
    records = read_metrics(run)
    if not records:
        return None
    best = max(records, key=lambda r: r['valid_accuracy'])
    acc = best['valid_accuracy']

    def seconds_to(fraction: float) -> float:
        return next(r for r in records if r['valid_accuracy'] >= fraction * acc)['elapsed_seconds']

    summary = read_summary(run) or {}
    size = _checkpoint_size(run)
    return {
        'best_valid_accuracy': acc,
        'best_epoch': best['epoch'],
        'best_seconds': best['elapsed_seconds'],
        'seconds_to_90pct': seconds_to(0.9),
        'seconds_to_95pct': seconds_to(0.95),
        'test_accuracy': summary.get('test_accuracy'),
        'params': size.get('params', summary.get('num_params')),
        'checkpoint_mb': size.get('checkpoint_model_mb'),
        'images_per_second': summary.get(
            'images_per_second', statistics.mean(r['images_per_second'] for r in records)
        ),
        'curve': [(r['elapsed_seconds'], r['valid_accuracy']) for r in records],
    }


def _checkpoint_size(run: pathlib.Path) -> dict[str, Any]:
    """Parameters and MB of the best checkpoint's model state (``flaxcnn.sizes``), if any."""
    if not (run / 'checkpoints').is_dir():
        return {}
    from flaxcnn import sizes  # imports JAX and Orbax: only when there is a checkpoint

    try:
        return sizes.run_sizes(run)
    except FileNotFoundError:
        return {}


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def leaderboard(workdir: pathlib.Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the study's record, one row per trial): best points first, then pruned, then failed."""
    record = json.loads((workdir / 'study.json').read_text(encoding='utf-8'))
    study = optuna.load_study(study_name=record['name'], storage=storage_url(workdir))
    rows = []
    for trial in study.get_trials(deepcopy=False):
        folder = trial_dir(workdir, trial.number)
        runs = sorted(folder.glob('seed_*')) if folder.is_dir() else []
        numbers = [n for n in map(run_numbers, runs) if n is not None]
        row = {
            'trial': trial.number,
            **{name: trial.params.get(name) for name in record['params']},
            'state': STATES.get(trial.state.name, trial.state.name.lower()),
            'runs': len(numbers),
        }
        for key, _ in MEASURES:
            row[key], row[f'{key}_std'] = _mean_std([n[key] for n in numbers])
        row['curves'] = [n['curve'] for n in numbers]
        row['workdir'] = str(folder.relative_to(workdir))
        row['error'] = trial.user_attrs.get('error', '').strip().splitlines()[-1:] or ['']
        row['error'] = row['error'][0]
        rows.append(row)
    rank = {'complete': 0, 'running': 1, 'pruned': 2, 'failed': 3}
    rows.sort(key=lambda r: (rank.get(r['state'], 4), -(r['best_valid_accuracy'] or 0.0)))
    return record, rows


def _cell(row: dict, key: str) -> str:
    mean, std = row.get(key), row.get(f'{key}_std')
    if mean is None:
        return '-'
    if key in PERCENT:
        text = f'{mean:.2%}'
        return f'{text} ± {std:.2%}' if row['runs'] > 1 else text
    if key == 'params':
        return f'{mean:,.0f}'
    digits = 2 if key in ('checkpoint_mb', 'best_epoch') else 0 if key == 'images_per_second' else 1
    text = f'{mean:,.{digits}f}'
    return f'{text} ± {std:,.{digits}f}' if row['runs'] > 1 else text


def _table(record: dict, rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The leaderboard as display strings: (header, rows)."""
    header = ['trial', *record['params'], 'state', 'runs', *(label for _, label in MEASURES)]
    body = [
        [
            str(r['trial']),
            *('-' if r[p] is None else str(r[p]) for p in record['params']),
            r['state'],
            str(r['runs']),
            *(_cell(r, key) for key, _ in MEASURES),
        ]
        for r in rows
    ]
    return header, body


def _markdown(header: list[str], body: list[list[str]]) -> str:
    def line(cells):
        return '| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |'

    return '\n'.join([line(header), line(['---'] * len(header)), *map(line, body)]) + '\n'


def _csv(record: dict, rows: list[dict]) -> str:
    columns = ['trial', *record['params'], 'state', 'runs']
    for key, _ in MEASURES:
        columns += [key, f'{key}_std']
    columns += ['workdir', 'error']
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction='ignore', lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _label(record: dict, row: dict) -> str:
    return ', '.join(f'{p.split(".")[-1]}={row[p]}' for p in record['params']) or f'#{row["trial"]}'


def _png(fig: Figure) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format='png', dpi=100, bbox_inches='tight')
    return out.getvalue()


def _curves(record: dict, rows: list[dict]) -> bytes:
    """Validation accuracy against training seconds of every run; the best point highlighted."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    best = rows[0] if rows and rows[0]['state'] == 'complete' else None
    for row in reversed(rows):
        for curve in row['curves']:
            seconds, acc = zip(*curve)
            style = '--' if row['state'] == 'pruned' else '-'
            if row is best:
                ax.plot(seconds, acc, style, color=BEST, lw=2.5, marker='o', ms=3)
            else:
                ax.plot(seconds, acc, style, color='0.55', lw=1, alpha=0.7)
    if best:
        ax.plot([], [], color=BEST, lw=2.5, label=f'best: {_label(record, best)}')
    ax.plot([], [], color='0.55', label='other trials (dashed: pruned)')
    ax.set_xlabel('training seconds')
    ax.set_ylabel('validation accuracy')
    ax.set_title(f'{record["name"]}: validation accuracy against training time')
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right')
    return _png(fig)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_params(record: dict, rows: list[dict]) -> list[str]:
    return [
        p
        for p in record['params']
        if all(_is_number(r[p]) for r in rows) and len({r[p] for r in rows}) > 1
    ]


def _grid(record: dict, rows: list[dict], x: str, y: str) -> bytes:
    """Mean best validation accuracy over the two numeric fields ``x`` and ``y``."""
    done = [r for r in rows if r['state'] == 'complete']
    xs, ys = sorted({r[x] for r in rows}), sorted({r[y] for r in rows})
    fig = Figure(figsize=(1.4 * len(xs) + 3, 1.0 * len(ys) + 2.5))
    ax = fig.add_subplot()
    if len(xs) * len(ys) <= len(rows):  # the points form a grid
        cells = [
            [
                _mean_or_nan([r['best_valid_accuracy'] for r in done if r[x] == a and r[y] == b])
                for a in xs
            ]
            for b in ys
        ]
        image = ax.imshow(cells, cmap='viridis', origin='lower', aspect='auto')
        for j, line in enumerate(cells):
            for i, value in enumerate(line):
                if not math.isnan(value):
                    ax.text(i, j, f'{value:.1%}', ha='center', va='center', color='w', fontsize=9)
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        ax.set_yticks(range(len(ys)), [str(v) for v in ys])
    else:  # a search: one dot per trial
        image = ax.scatter(
            [r[x] for r in done], [r[y] for r in done], c=[r['best_valid_accuracy'] for r in done]
        )
        if xs[0] > 0 and xs[-1] >= 10 * xs[0]:
            ax.set_xscale('log')
        if ys[0] > 0 and ys[-1] >= 10 * ys[0]:
            ax.set_yscale('log')
    fig.colorbar(image, ax=ax, label='best validation accuracy')
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f'{record["name"]}: {y} x {x} (blank: pruned or failed)')
    return _png(fig)


def _mean_or_nan(values: list) -> float:
    return statistics.mean(values) if values else math.nan


def _effects(record: dict, rows: list[dict]) -> bytes:
    """One panel per varied field: each point's best validation accuracy at each value."""
    params = record['params']
    fig = Figure(figsize=(4.2 * len(params), 4), layout='constrained')
    for k, param in enumerate(params):
        ax = fig.add_subplot(1, len(params), k + 1)
        values = sorted({r[param] for r in rows}, key=lambda v: (str(type(v)), v))
        for state, marker in (('complete', 'o'), ('pruned', 'x')):
            picked = [
                r for r in rows if r['state'] == state and r['best_valid_accuracy'] is not None
            ]
            ax.scatter(
                [values.index(r[param]) for r in picked],
                [r['best_valid_accuracy'] for r in picked],
                marker=marker,
                label=state,
            )
        means = [
            _mean_or_nan(
                [
                    r['best_valid_accuracy']
                    for r in rows
                    if r['state'] == 'complete' and r[param] == v
                ]
            )
            for v in values
        ]
        ax.plot(range(len(values)), means, color=BEST, label='mean of complete')
        ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=30, ha='right')
        ax.set_xlabel(param)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel('best validation accuracy')
    fig.axes[0].legend()
    fig.suptitle(f'{record["name"]}: one field at a time')
    return _png(fig)


def _size_vs_accuracy(record: dict, rows: list[dict]) -> bytes:
    """Best validation accuracy against checkpoint MB, one point per trial."""
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    for row in rows:
        if row['checkpoint_mb'] is None or row['best_valid_accuracy'] is None:
            continue
        ax.errorbar(
            row['checkpoint_mb'],
            row['best_valid_accuracy'],
            yerr=row['best_valid_accuracy_std'],
            fmt='o' if row['state'] == 'complete' else 'x',
            color=BEST if row is rows[0] else 'C0',
        )
        ax.annotate(
            _label(record, row),
            (row['checkpoint_mb'], row['best_valid_accuracy']),
            fontsize=8,
            xytext=(4, 4),
            textcoords='offset points',
        )
    ax.set_xlabel('checkpoint MB (params + batch statistics)')
    ax.set_ylabel('best validation accuracy')
    ax.set_title(f'{record["name"]}: accuracy against size')
    ax.grid(alpha=0.3)
    return _png(fig)


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Study {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} tr:first-child td {{ font-weight: bold; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head>
<body data-images-loaded="">
<h1>Study {name}</h1>
<p>{summary}</p>
<h2>Leaderboard</h2>
<table id="leaderboard"><thead><tr>{header}</tr></thead><tbody>
{body}
</tbody></table>
{errors}
{figures}
<script>
// Records whether every picture decoded, for a browser-based check of this page.
window.addEventListener('load', () => {{
  const images = Array.from(document.images);
  const decoded = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesLoaded = decoded + '/' + images.length;
}});
</script>
</body></html>
"""


def _html(record: dict, header, body, rows, pictures: dict[str, bytes]) -> str:
    states = [r['state'] for r in rows]
    counts = ', '.join(f'{states.count(s)} {s}' for s in dict.fromkeys(states))
    summary = (
        f'Base config <code>{html.escape(record["base_config"])}</code>; {len(rows)} trials '
        f'({counts}); written {datetime.datetime.now().isoformat(timespec="seconds")}.'
    )
    failed = [r for r in rows if r['error']]
    errors = ''
    if failed:
        items = ''.join(
            f'<li>trial {r["trial"]}: <code>{html.escape(r["error"])}</code> '
            f'({html.escape(r["workdir"])}/*/stderr.log)</li>'
            for r in failed
        )
        errors = f'<h2>Failed trials</h2><ul>{items}</ul>'
    figures = ''.join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in pictures.items()
    )
    return HTML.format(
        name=html.escape(record['name']),
        summary=summary,
        header=''.join(f'<th>{html.escape(h)}</th>' for h in header),
        body='\n'.join(
            '<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in line) + '</tr>' for line in body
        ),
        errors=errors,
        figures=figures,
    )


def write(workdir: str | pathlib.Path) -> pathlib.Path:
    """Writes ``<workdir>/report/`` from what the study workdir holds; returns report.html."""
    workdir = pathlib.Path(workdir)
    if not (workdir / 'study.json').exists():
        raise StudyError(f'{workdir} holds no study (no study.json).')
    record, rows = leaderboard(workdir)
    out = workdir / 'report'
    header, body = _table(record, rows)
    write_atomic(out / 'leaderboard.md', _markdown(header, body))
    write_atomic(out / 'leaderboard.csv', _csv(record, rows))
    pictures = {}
    if any(r['curves'] for r in rows):
        pictures['curves.png'] = _curves(record, rows)
        numeric = _numeric_params(record, rows)
        if len(numeric) >= 2:
            pictures['grid.png'] = _grid(record, rows, numeric[0], numeric[1])
        pictures['effects.png'] = _effects(record, rows)
        if any(r['checkpoint_mb'] is not None for r in rows):
            pictures['size_vs_accuracy.png'] = _size_vs_accuracy(record, rows)
    for name, png in pictures.items():
        write_atomic(out / name, png)
    page = out / 'report.html'
    write_atomic(page, _html(record, header, body, rows, pictures))
    return page
