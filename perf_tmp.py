import asyncio, time, statistics, tempfile, os, cProfile, pstats, sys
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from optibase_edge import Optibase, Test, Variant, OptibaseMiddleware, Conversion, ConversionType
PAGE = "<html><head><title>x</title></head><body>" + "<p>hello</p>"*50 + "</body></html>"
async def page(request): return HTMLResponse(PAGE)
tmp = tempfile.mkdtemp()
def mk(**kw):
    ob = Optibase(tests=[Test(f"t{i}", [Variant("a"), Variant("b")], pages=["/"] if i < 3 else ["/other"]) for i in range(5)],
        conversions=[Conversion("s", ConversionType.CLICK, selector="#s")], secret_keys=["s"], events_path=os.path.join(tmp,"e.jsonl"), **kw)
    app = Starlette(routes=[Route("/", page)]); app.add_middleware(OptibaseMiddleware, optibase=ob); return app, ob
wrapped, ob = mk()
noinj, _ = mk(inject_script=False)
bare = Starlette(routes=[Route("/", page)])
async def call(app, headers):
    scope = {"type":"http","method":"GET","path":"/","raw_path":b"/","root_path":"","scheme":"http","query_string":b"","headers":headers,"client":("127.0.0.1",1),"server":("127.0.0.1",80),"http_version":"1.1","asgi":{"version":"3.0"}}
    out = []
    async def receive(): return {"type":"http.request","body":b"","more_body":False}
    async def send(m): out.append(m)
    await app(scope, receive, send)
    return out
async def main():
    out = await call(wrapped, [(b"host", b"x")])
    cookie = [v for k,v in out[0]["headers"] if k==b"set-cookie"][0].split(b";")[0]
    hdr = [(b"host", b"x"), (b"cookie", cookie)]
    if "prof" in sys.argv:
        pr = cProfile.Profile(); pr.enable()
        for _ in range(20000): await call(wrapped, hdr)
        pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(25); return
    res = {"bare":[], "ret":[], "noinj":[]}
    for r in range(7):
        for name, app in (("bare", bare), ("ret", wrapped), ("noinj", noinj)):
            t=time.perf_counter()
            for _ in range(3000): await call(app, hdr)
            res[name].append((time.perf_counter()-t)/3000*1e6)
    m = {k: statistics.median(v) for k,v in res.items()}
    print({k: round(v,2) for k,v in m.items()}, {k: round(v/m["bare"],2) for k,v in m.items()})
asyncio.run(main())
