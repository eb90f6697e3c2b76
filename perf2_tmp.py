import sys
exec(open("perf_tmp.py").read().replace('asyncio.run(main())',''))
import optibase_edge.middleware as mw, optibase_edge.injection as inj
exp = sys.argv[1]
if exp == "consttag":
    mw.script_tag = lambda *a: b"<script src=x></script>"
if exp == "noactive":
    mw.Visitor.active_variants = property(lambda self: {})
if exp == "nofeed":
    inj.HtmlInjector.feed = lambda self, chunk, more: chunk
if exp == "nonce":
    pass
asyncio.run(main())
