import asyncio, time, statistics, tempfile, os
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route
from optibase_edge import Optibase, Test, Variant, OptibaseMiddleware, Conversion, ConversionType

async def page(request): return PlainTextResponse("hello")
def bare():
    return Starlette(routes=[Route("/", page)])
tmp = tempfile.mkdtemp()
ob = Optibase(tests=[Test(f"t{i}", [Variant("a"), Variant("b")], pages=["/"] if i < 3 else ["/other"]) for i in range(5)],
    conversions=[Conversion("p", ConversionType.PAGE_VIEW, url="/pricing")], secret_keys=["s"], events_path=os.path.join(tmp,"e.jsonl"))
wrapped = Starlette(routes=[Route("/", page)]); wrapped.add_middleware(OptibaseMiddleware, optibase=ob)
b = bare()
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
    N=5000
    res = {"bare":[], "ret":[], "new":[]}
    for r in range(7):
        for name, app, h in (("bare", b, [(b"host", b"x")]), ("ret", wrapped, hdr), ("new", wrapped, [(b"host", b"x")])):
            t=time.perf_counter()
            for i in range(N):
                await call(app, h)
                if i % 500 == 0: ob.delivery._incoming.clear()
            res[name].append((time.perf_counter()-t)/N*1e6)
        pass
    m = {k: statistics.median(v) for k,v in res.items()}
    print({k: round(v,2) for k,v in m.items()}, "ret/bare", round(m["ret"]/m["bare"],2), "new/bare", round(m["new"]/m["bare"],2))
asyncio.run(main())
