"""`--export report.html`: the overview (funnel, reasons, errors, stages, distributions) and, for two
outputs, the comparison, as one self-contained HTML file: CSS, JavaScript and the aggregates inline.

The what-if and the gallery need the server (they query the manifest and read the shards); the report
lists the thresholds the run used instead.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from vidmill.dashboards import compare, distributions, funnel, rules
from vidmill.dashboards.app import HERE, jsonable
from vidmill.dashboards.state import Dashboard

VENDOR = ["vendor/vega.min.js", "vendor/vega-lite.min.js", "vendor/vega-embed.min.js", "app.js"]


def _inline_js(text: str) -> str:
    return text.replace("</script", "<\\/script")


def render_report(outputs: list[str | Path]) -> str:
    dash = Dashboard(outputs)
    store = dash.store
    overviews, charts, histograms = [], {}, {}
    for out in store.outputs:
        i = out.index
        engine = dash.whatif(i)
        overviews.append(funnel.view(store, i, engine.owned) | {"thresholds": rules.flat(engine.base)})
        charts[i] = distributions.charts(store, i, engine)
        histograms[i] = {c["column"]: distributions.data(store, i, c["column"]) for c in charts[i]}
    data: dict = {"charts": charts, "histograms": histograms}
    cmp = None
    if len(store.outputs) >= 2:
        owned = sorted(set(dash.whatif(0).owned) | set(dash.whatif(1).owned))
        cmp = compare.view(store, 0, 1, owned)
        data["compare"] = {"a": 0, "b": 1, "charts": charts[0], "histograms": histograms}
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(["html"]))
    static = HERE / "static"
    inline = {"css": (static / "app.css").read_text(),
              "js": [_inline_js((static / name).read_text()) for name in VENDOR]}
    return env.get_template("overview.html").render(
        page="report", run=0, title="report", inline=inline, outputs=[], overviews=overviews,
        compare=jsonable(cmp) if cmp else None, data=jsonable(data),
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def write_report(outputs: list[str | Path], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(outputs))
    return path
