"""The dashboard's routes (Starlette): pages, JSON aggregates, clip media. Read-only: GET and HEAD only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from vidmill.dashboards import compare, distributions, funnel, gallery, media
from vidmill.dashboards.state import Dashboard

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _json(value: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable(value), status_code=status)


def create_app(outputs: list[str | Path], train_runs: list[str | Path] | None = None) -> Starlette:
    """The app over curation outputs and, optionally, training runs (their loss and evaluations: /training)."""
    dash = Dashboard(outputs)
    train_runs = [Path(p) for p in train_runs or []]
    dash.warm()
    store = dash.store

    def run_of(request: Request, key: str = "run") -> int:
        raw = request.query_params.get(key, "0")
        index = int(raw) if raw.isdigit() else -1
        if not 0 <= index < len(store.outputs):
            raise _NotFound()
        return index

    def base(request: Request, page: str, run: int, title: str) -> dict[str, Any]:
        return {"request": request, "page": page, "run": run, "title": title, "inline": None,
                "outputs": [{"index": o.index, "name": o.name} for o in store.outputs],
                "has_training": bool(train_runs)}

    def overview(request: Request) -> Response:
        i = run_of(request)
        engine = dash.whatif(i)
        ov = funnel.view(store, i, engine.owned)
        data = {"run": i, "charts": {i: distributions.charts(store, i, engine)}, "sliders": engine.sliders(),
                "kept_now": engine.now["kept"], "hours_now": engine.now["kept_hours"]}
        ctx = base(request, "overview", i, store.output(i).name) | {"overviews": [ov], "data": jsonable(data),
                                                                     "compare": None}
        return templates.TemplateResponse(request, "overview.html", ctx)

    def gallery_page(request: Request) -> Response:
        i = run_of(request)
        f = gallery.Filters.from_query(dict(request.query_params))
        query = dict(request.query_params)

        def link(page: int) -> str:
            return "/gallery?" + urlencode(query | {"page": page})

        play = request.query_params.get("play")
        if play:  # open the page that holds the clip to play
            where = gallery.page_of(store, i, f, play)
            if where is not None and where != f.page:
                return RedirectResponse(link(where), status_code=303)
        pg = gallery.page(store, i, f)

        data = {"run": i, "clips": [r["clip_id"] for r in pg["rows"]], "play": request.query_params.get("play"),
                "prev": link(f.page - 1) if f.page > 0 else None,
                "next": link(f.page + 1) if f.page + 1 < pg["pages"] else None}
        ctx = base(request, "gallery", i, "gallery") | {"f": f, "pg": jsonable(pg), "opts": gallery.options(store, i),
                                                        "link": link, "data": data}
        return templates.TemplateResponse(request, "gallery.html", ctx)

    def compare_page(request: Request) -> Response:
        if len(store.outputs) < 2:
            return PlainTextResponse("compare needs two outputs: vidmill dashboard OUT1 OUT2", status_code=404)
        a, b = run_of(request, "a"), run_of(request, "b")
        cmp = compare.view(store, a, b, sorted(set(dash.whatif(a).owned) | set(dash.whatif(b).owned)))
        data = {"compare": {"a": a, "b": b, "charts": distributions.charts(store, a, dash.whatif(a))}}
        ctx = base(request, "compare", a, "compare") | {"compare": jsonable(cmp), "data": data}
        return templates.TemplateResponse(request, "compare.html", ctx)

    def training_page(request: Request) -> Response:
        from vidmill.dashboards.training_runs import run_view

        t = _index(request.query_params.get("t", "0"), len(train_runs))
        view = run_view(train_runs[t])
        ctx = base(request, "training", 0, f"training {view['name']}") | {
            "tr": jsonable(view), "t": t, "trains": [p.name for p in train_runs], "data": {"training": jsonable(view)}}
        return templates.TemplateResponse(request, "training.html", ctx)

    def api_hist(request: Request) -> Response:
        i = run_of(request)
        raw_bins = request.query_params.get("bins", "40")
        bins = min(200, max(5, int(raw_bins))) if raw_bins.isdigit() else 40
        found = distributions.data(store, i, request.query_params.get("column", ""), bins)
        return _json(found) if found else _json({"error": "unknown column"}, 404)

    def api_whatif(request: Request) -> Response:
        i = run_of(request)
        engine = dash.whatif(i)
        changes = {}
        for key, raw in request.query_params.items():
            if key in engine.inputs.settings:
                try:
                    changes[key] = float(raw)
                except ValueError:
                    return _json({"error": f"{key} must be a number"}, 400)
        return _json(engine.evaluate(changes))

    def api_gallery(request: Request) -> Response:
        i = run_of(request)
        return _json(gallery.page(store, i, gallery.Filters.from_query(dict(request.query_params))))

    def api_clip(request: Request) -> Response:
        i = run_of(request)
        row = gallery.clip(store, i, request.path_params["clip_id"])
        if row is None:
            raise _NotFound()
        row.pop("caption_raw", None)
        members = gallery.duplicates(store, i, row["dup_group"]) if row.get("dup_group") else []
        return _json({"row": row, "playable": bool(dash.member(i, row["clip_id"], "mp4")), "duplicates": members})

    def clip_video(request: Request) -> Response:
        i = _index(request.path_params["run"], len(store.outputs))
        found = dash.member(i, request.path_params["clip_id"], "mp4")
        if not found:
            raise _NotFound()
        return _ranged(request, found.member.size,
                       lambda start, length: media.read_slice(found.path, found.member.offset + start, length))

    def preview_video(request: Request) -> Response:
        i = _index(request.path_params["run"], len(store.outputs))
        try:
            data = dash.preview(i, request.path_params["clip_id"])
        except Exception as exc:  # an unreadable source: say why, never crash the server
            return PlainTextResponse(f"cannot preview this clip's source: {exc}", status_code=422)
        if data is None:
            raise _NotFound()
        return _ranged(request, len(data), lambda start, length: iter([data[start:start + length]]))

    def clip_vtt(request: Request) -> Response:
        i = _index(request.path_params["run"], len(store.outputs))
        text = dash.captions_vtt(i, request.path_params["clip_id"])
        if text is None:
            raise _NotFound()
        return Response(text, media_type="text/vtt; charset=utf-8")

    def thumb(request: Request) -> Response:
        i = _index(request.path_params["run"], len(store.outputs))
        try:
            jpg = dash.thumbnail(i, request.path_params["clip_id"])
        except Exception as exc:
            return PlainTextResponse(f"no thumbnail: {exc}", status_code=422)
        if jpg is None:
            raise _NotFound()
        return Response(jpg, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", status_code=404)

    routes = [
        Route("/", overview), Route("/gallery", gallery_page), Route("/compare", compare_page),
        Route("/training", training_page),
        Route("/api/hist", api_hist), Route("/api/whatif", api_whatif), Route("/api/gallery", api_gallery),
        Route("/api/clip/{clip_id}", api_clip),
        Route("/media/{run}/{clip_id}.mp4", clip_video), Route("/media/{run}/{clip_id}.vtt", clip_vtt),
        Route("/preview/{run}/{clip_id}.mp4", preview_video), Route("/thumb/{run}/{clip_id}.jpg", thumb),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={_NotFound: not_found, 404: not_found})
    app.state.dashboard = dash
    return app


class _NotFound(Exception):
    pass


def _index(raw: str, n: int) -> int:
    if not raw.isdigit() or not 0 <= int(raw) < n:
        raise _NotFound()
    return int(raw)


def _ranged(request: Request, size: int, read: Any) -> Response:
    """A 200 or 206 response over `size` bytes read by `read(start, length)`; 416 for a bad range."""
    headers = {"Accept-Ranges": "bytes", "Content-Type": "video/mp4"}
    try:
        wanted = media.parse_range(request.headers.get("range"), size)
    except ValueError:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    length = end - start + 1
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return StreamingResponse(read(start, length), status_code=status, headers=headers, media_type="video/mp4")
